"""The template catalog: every worker sees every template, fed by whatsapp.templates and the
template changes in Meta's webhook bodies.

Values are the short, time-sorted history of entries for one tenant:name:language, so that a
decision can see the entry in effect at its clock (processors.core.policy.templates).

The catalog agent (consumer group) applies each change to a Faust table, whose changelog
carries it. Every worker reads that changelog in full into a CatalogReplica, and every lookup
reads the replica: Faust's GlobalTable applies the changelog partitions a worker does not own
only while it recovers, not after (faust-streaming/faust#212; seen here with two workers:
each knew only the templates of its own partitions). A history arriving for a key is merged
into what the replica holds, not put in its place: the agent merges with its own table, which
may lack entries written from another worker's partitions, and merging makes every replica
the union whatever the order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import faust
import orjson

from processors.core import webhooks
from processors.core.decode import DecodeError, parse_json
from processors.core.policy import templates as tpl
from processors.runtime import feed
from processors.runtime.dead_letters import DeadLetters
from processors.runtime.metrics import GateMetrics
from processors.settings import Settings

log = logging.getLogger(__name__)

CATALOG_CONTRACTS = frozenset({"template_entry", webhooks.TEMPLATE_UPDATE,
                               webhooks.MESSAGING_LIMIT})
# A tenant's messaging limit (what Meta's webhooks last said) is kept in the catalog too, so
# that every worker knows every tenant's: key "<tenant>:~messaging-limit", a history of
# {"tenant_id", "limit", "updated_at", "source"} (the newest in effect wins).
LIMIT_SUFFIX = ":~messaging-limit"
LIMIT_FIELDS = ("tenant_id", "limit", "updated_at", "source")

CatalogTable = Any  # faust.GlobalTable of str -> list of entries (untyped in Faust's stubs)
ENTRY_FIELDS = ("tenant_id", "name", "language", "category", "status", "updated_at")


class CatalogReplica:
    """This worker's full copy of the catalog: key -> history (the lookups' source)."""

    def __init__(self) -> None:
        self.data: dict[str, tpl.TemplateHistory] = {}
        self.caught_up = False

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str) -> tpl.TemplateHistory | None:
        return self.data.get(key)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One changelog record (keys and values are JSON, as the table writes them)."""
        if key is None:
            return
        name = orjson.loads(key)
        if value is None:
            self.data.pop(name, None)
            return
        history = self.data.get(name) or ()
        for entry in orjson.loads(value) or ():
            history = tpl.merge(history, entry)
        self.data[name] = history


def register(app: faust.App, settings: Settings, metrics: GateMetrics) -> CatalogReplica:
    replica = CatalogReplica()
    table = app.GlobalTable(
        "template-catalog",
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=settings.partitions,
        store="memory:template-catalog",  # small, rebuilt from its changelog at start
        help="tenant:name:language -> template catalog entries, oldest first",
    )
    topics = settings.topics
    source = app.topic(topics.templates, topics.webhooks, key_serializer="raw",
                       value_serializer="raw")
    contracts = {topic: topics.contracts()[topic] for topic in (topics.templates, topics.webhooks)}
    dead_letters = DeadLetters(app, settings, metrics)

    @app.agent(source, name="catalog")
    async def load_catalog(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            metrics.input_records.labels(message.topic).inc()
            try:
                ignored = apply(table, message.key, message.value, settings.max_message_bytes,
                                contracts[message.topic], message.timestamp or time.time(),
                                webhooks.header_tenant(message.headers), settings.tenant_map)
            except DecodeError as error:
                if message.topic == topics.webhooks:
                    continue  # the route agent reads it too, and sends the one dead letter
                await dead_letters.send(message, error)
                continue
            for kind in ignored:  # state events of a body on the catalog topic
                metrics.webhook_ignored.labels(message.topic, kind).inc()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_catalog() -> None:
        def caught_up() -> None:
            replica.caught_up = True

        await feed.follow(settings, settings.catalog_changelog_topic, "catalog",
                          lambda _, record: replica.apply(record.key, record.value), caught_up)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def measure_catalog() -> None:
        metrics.catalog_entries.set(len(replica))

    return replica


def apply(table: CatalogTable, key: bytes | None, value: bytes | None, max_bytes: int,
          contract: str = "template_entry", received_at: float = 0.0, tenant: str | None = None,
          tenant_map: Mapping[str, str] | None = None) -> list[str]:
    """Apply one catalog record: an entry, a tombstone, or Meta's body (template changes).

    Returns the kinds of the events of a Meta body that are not the catalog's (ignored here).
    """
    if value is None:  # tombstone: deletes the entry its key names
        if contract == webhooks.WEBHOOK:
            return []
        if key is None:
            raise DecodeError("empty", "a catalog tombstone without a key")
        table.pop(key.decode("utf-8", "replace"), None)
        return []
    document = parse_json(value, max_bytes)
    ignored = []
    for kind, entry in webhooks.read(contract, document, received_at, tenant, tenant_map):
        if kind not in CATALOG_CONTRACTS:
            ignored.append(kind)
            continue
        if kind == webhooks.MESSAGING_LIMIT:
            entry = {field: entry[field] for field in LIMIT_FIELDS if field in entry}
            name = limit_key(entry["tenant_id"])
            table[name] = list(tpl.merge(tuple(table.get(name) or ()), entry))
            continue
        # Keep only the contract's fields: their lengths are bounded by the schema. Fields
        # beyond them are allowed on the wire, and a history of up to four entries carrying
        # ~600 KB each made a changelog record over the broker's limit (the entry was in memory
        # but never reached the changelog, so a restart lost it).
        entry = {field: entry[field] for field in ENTRY_FIELDS if field in entry}
        name = tpl.catalog_key(entry["tenant_id"], entry["name"], entry["language"])
        table[name] = list(tpl.merge(tuple(table.get(name) or ()), entry))
    return ignored


def tenants(replica: CatalogReplica) -> frozenset[str]:
    """Every tenant with an entry in the catalog (keys are tenant:name:language; a template's
    name and language hold no colon, a tenant id may)."""
    return frozenset(key[:-len(LIMIT_SUFFIX)] if key.endswith(LIMIT_SUFFIX)
                     else key.rsplit(":", 2)[0] for key in list(replica.data))


def limit_key(tenant_id: str) -> str:
    return f"{tenant_id}{LIMIT_SUFFIX}"


def learned_limit(replica: CatalogReplica, tenant_id: str, clock: float
                  ) -> tuple[int | None, bool]:
    """(the limit Meta's webhooks gave the tenant in effect at the clock (None: unlimited),
    whether they gave one at all)."""
    entry = tpl.entry_at(replica.data.get(limit_key(tenant_id)), clock)
    if entry is None:
        return None, False
    limit = entry.get("limit")
    return (limit if isinstance(limit, int) else None), True


def lookup_with_upcoming(replica: CatalogReplica, tenant_id: str, name: str, language: str,
                         clock: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The entry in effect at the clock, and the next category change announced after it."""
    history = replica.data.get(tpl.catalog_key(tenant_id, name, language))
    if not history:
        return None, None
    return tpl.entry_at(history, clock), tpl.pending_category(history, clock)


def template_of(replica: CatalogReplica, message: dict[str, Any], clock: float
                ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the message's template entry in effect at the clock, the category change Meta
    announced for later); (None, None) for a free-form message."""
    if message["kind"] != "template":
        return None, None
    template = message["template"]
    return lookup_with_upcoming(replica, message["tenant_id"], template["name"],
                                template["language"], clock)
