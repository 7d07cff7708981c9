"""The template catalog: a GlobalTable (every worker sees every template) fed by whatsapp.templates.

Values are the short, time-sorted history of entries for one tenant:name:language, so that a
decision can see the entry in effect at its clock (processors.policy.templates).
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from processors.dead_letters import DeadLetters
from processors.decode import DecodeError, decode
from processors.metrics import GateMetrics
from processors.policy import templates as tpl
from processors.settings import Settings

log = logging.getLogger(__name__)

CatalogTable = Any  # faust.GlobalTable of str -> list of entries (untyped in Faust's stubs)
ENTRY_FIELDS = ("tenant_id", "name", "language", "category", "status", "updated_at")


def register(app: faust.App, settings: Settings, metrics: GateMetrics) -> CatalogTable:
    table = app.GlobalTable(
        "template-catalog",
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=settings.partitions,
        store="memory:template-catalog",  # small, rebuilt from its changelog at start
        help="tenant:name:language -> template catalog entries, oldest first",
    )
    source = app.topic(settings.topics.templates, key_serializer="raw", value_serializer="raw")
    dead_letters = DeadLetters(app, settings, metrics)

    @app.agent(source, name="catalog")
    async def load_catalog(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            metrics.input_records.labels(message.topic).inc()
            try:
                apply(table, message.key, message.value, settings.max_message_bytes)
            except DecodeError as error:
                await dead_letters.send(message, error)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def measure_catalog() -> None:
        metrics.catalog_entries.set(len(table))

    return table


def apply(table: CatalogTable, key: bytes | None, value: bytes | None, max_bytes: int) -> None:
    if value is None:  # tombstone: deletes the entry its key names
        if key is None:
            raise DecodeError("empty", "a catalog tombstone without a key")
        table.pop(key.decode("utf-8", "replace"), None)
        return
    document = decode("template_entry", value, max_bytes)
    # Keep only the contract's fields: their lengths are bounded by the schema. Fields beyond
    # them are allowed on the wire, and a history of up to four entries carrying ~600 KB each
    # made a changelog record over the broker's limit (MessageSizeTooLargeError: the entry
    # was in memory but never reached the changelog, so a restart lost it).
    entry = {field: document[field] for field in ENTRY_FIELDS}
    name = tpl.catalog_key(entry["tenant_id"], entry["name"], entry["language"])
    table[name] = list(tpl.merge(tuple(table.get(name) or ()), entry))


def lookup(table: CatalogTable, tenant_id: str, name: str, language: str,
           clock: float | None) -> dict[str, Any] | None:
    history = table.get(tpl.catalog_key(tenant_id, name, language))
    return tpl.entry_at(tuple(history), clock) if history else None
