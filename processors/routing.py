"""Routing: decode -> co-partition by recipient -> state or decision -> output records.

No Kafka I/O here: processors.processing consumes the records, calls Router.handle and produces
what it returns in one transaction with the input offsets.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from processors import catalog, dead_letters, outputs, recipient_state, webhooks
from processors.catalog import CatalogTable
from processors.decode import DecodeError, decode, parse_json
from processors.enrich import parse_recipient
from processors.metrics import NONE, GateMetrics
from processors.policy import (
    EMPTY,
    Decision,
    Enrichment,
    PolicySet,
    RecipientState,
    decide,
    enrich,
)
from processors.policy import state as st
from processors.policy.state import REDUCERS, state_key
from processors.policy_feed import PolicyHolder
from processors.settings import Settings
from processors.state_store import PartitionStore
from processors.timeutil import parse_rfc3339
from processors.webhooks import WEBHOOK, Document

log = logging.getLogger(__name__)

ROUTED = frozenset({"outbound_message", *REDUCERS})


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the Java client)."""
    return partition_for_bytes(key.encode("utf-8"), partitions)


@functools.lru_cache(maxsize=65_536)  # keys recur (busy recipients); murmur2 is pure Python
def partition_for_bytes(key: bytes, partitions: int) -> int:
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def recipient_key(contract: str, document: dict[str, Any]) -> str | None:
    """tenant_id:recipient_e164 of any routed contract; None when the number is not valid."""
    if contract == "outbound_message":
        e164 = parse_recipient(document["recipient"], document.get("recipient_region")).e164
    else:
        e164 = parse_recipient(document[REDUCERS[contract][1]]).e164
    return state_key(document["tenant_id"], e164) if e164 else None


# (what, labels...) -> how many; counted once the batch has committed
Tally = Counter[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Record:
    """What the router needs of one consumed record (aiokafka's ConsumerRecord, reshaped)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds
    headers: Sequence[tuple[str, bytes]] = ()
    consumed: float = 0.0  # time.monotonic() when it was fetched


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce in the transaction of the input it came from."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()


class Router:
    """One input record -> state changes and output records, for the partition that owns it.

    Everything about one tenant:recipient meets in one partition: the outbound topic, the
    state topics, the webhooks topic and the repartition topic have the same partition count,
    and a record whose partition is not the one its normalised key hashes to is re-keyed
    through the repartition topic; the rest are handled where they are.
    """

    def __init__(self, settings: Settings, holder: PolicyHolder, catalog_table: CatalogTable,
                 metrics: GateMetrics) -> None:
        topics = settings.topics
        self.settings = settings
        self.holder = holder
        self.catalog_table = catalog_table
        self.metrics = metrics
        self.partitions = settings.partitions
        self.rekeyed = settings.repartition_topic
        self.changelog = settings.changelog_topic
        self.contracts = {topics.outbound: "outbound_message",
                          topics.statuses: "delivery_status", topics.inbound: "inbound_message",
                          topics.preferences: "user_preference", topics.webhooks: WEBHOOK}

    @property
    def sources(self) -> list[str]:
        return [*self.contracts, self.rekeyed]

    def handle(self, record: Record, store: PartitionStore, out: list[Output], tally: Tally,
               now: float) -> None:
        """now: the batch's clock. tally: what to count once the batch has committed."""
        if record.topic == self.rekeyed:
            contract, document = unwrap(record.value)
            self.route(record, contract, document, store, out, tally, now)
            return
        contract = self.contracts[record.topic]
        tally[("in", record.topic)] += 1
        try:
            documents = read_input(contract, record, self.settings)
        except DecodeError as error:
            out.append(self.dead_letter(record, error, tally, now))
            return
        # One Meta body can carry several events, for several recipients: each one goes its
        # own way (handled here, or re-keyed to its home partition).
        for contract, document in documents:
            if contract in ROUTED:
                self.route(record, contract, document, store, out, tally, now)
            else:  # a catalog change in a body on a state topic: the catalog agent's
                tally[("ignored", record.topic, contract)] += 1

    def route(self, record: Record, contract: str, document: dict[str, Any],
              store: PartitionStore, out: list[Output], tally: Tally, now: float) -> None:
        key = recipient_key(contract, document)
        if key is None:
            if contract == "outbound_message":  # decided as INVALID_RECIPIENT; no state
                self.emit(document, EMPTY, now, record.consumed, out, tally)
            else:
                out.append(self.dead_letter(record, DecodeError(
                    "schema_invalid", f"{REDUCERS[contract][1]} is not a valid number"),
                    tally, now))
            return
        home = partition_for(key, self.partitions)
        if record.partition != home:
            out.append(Output(self.rekeyed, key.encode("utf-8"),
                              orjson.dumps({"c": contract, "d": document}), home))
            tally[("rekeyed",)] += 1
            return
        dedup = self.settings.dedup_seconds
        keep = recipient_state.retention(self.holder.current, document["tenant_id"], dedup)
        if contract != "outbound_message":
            self.changed(record.partition, out, recipient_state.apply_event(
                store, key, contract, document, keep, now))
            tally[("state", contract)] += 1
            return
        state = recipient_state.load(store, key)
        if st.already_decided(state, document["message_id"]):
            # The same message_id again (an upstream retry): its decision is already out.
            log.info("duplicate input dropped", extra={
                "event": "duplicate", "tenant": document["tenant_id"],
                "message_id": document["message_id"]})
            tally[("duplicate",)] += 1
            return
        self.emit(document, state, now, record.consumed, out, tally)
        if dedup:  # remember the idempotency key (0 switches de-duplication off)
            self.changed(record.partition, out, recipient_state.save(store, key, st.prune(
                st.with_decided(state, document["message_id"], now), now, keep)))

    def changed(self, partition: int, out: list[Output],
                change: tuple[bytes, bytes | None]) -> None:
        out.append(Output(self.changelog, change[0], change[1], partition))

    def emit(self, document: dict[str, Any], state: RecipientState, now: float,
             consumed: float, out: list[Output], tally: Tally) -> None:
        verdict = judge(document, state, self.holder.current, self.catalog_table, now)
        topics = self.settings.topics
        decision, enrichment = verdict.decision, verdict.enrichment
        out.append(Output(topics.accepted if decision.accepted else topics.rejected,
                          verdict.key.encode("utf-8"), orjson.dumps(verdict.record)))
        tally[("decision", document["tenant_id"],
               "accepted" if decision.accepted else "rejected",
               enrichment.template_category or NONE, decision.error_code or NONE,
               enrichment.recipient.region or "unknown", decision.monitored)] += 1
        if verdict.recategorized is not None:  # Meta announced a new category, due later
            tally[("recategorized", document["tenant_id"],
                   enrichment.template_category or NONE, verdict.recategorized)] += 1
        self.metrics.decision_latency.observe(time.monotonic() - consumed)
        self.metrics.event_age.observe(max(0.0, now - parse_rfc3339(document["created_at"])))

    def counted(self, tally: Tally) -> None:
        """The batch committed: count what it did."""
        metrics = self.metrics
        for key, amount in tally.items():
            kind = key[0]
            if kind == "decision":
                tenant, outcome, category, code, country, monitored = key[1:]
                metrics.count_decision(tenant, outcome, category, code, country, monitored,
                                       amount)
            elif kind == "in":
                metrics.input_records.labels(key[1]).inc(amount)
            elif kind == "state":
                metrics.state_events.labels(key[1]).inc(amount)
            elif kind == "rekeyed":
                metrics.repartitioned.inc(amount)
            elif kind == "duplicate":
                metrics.duplicates.inc(amount)
            elif kind == "dead_letter":
                metrics.dead_letters.labels(key[1], key[2]).inc(amount)
            elif kind == "ignored":
                metrics.webhook_ignored.labels(key[1], key[2]).inc(amount)
            elif kind == "recategorized":
                metrics.sends_before_recategorization.labels(
                    metrics.tenant(key[1]), key[2], key[3]).inc(amount)

    def dead_letter(self, record: Record, error: DecodeError, tally: Tally,
                    now: float) -> Output:
        key, value = dead_letters.encode(record.topic, record.partition, record.offset,
                                         record.key, record.value, record.headers, error, now)
        tally[("dead_letter", record.topic, error.reason)] += 1
        return Output(self.settings.topics.dlq, key, value)

    def sweep(self, store: PartitionStore, now: float) -> list[Output]:
        kept, changes = recipient_state.sweep(store, self.holder.current,
                                              self.settings.dedup_seconds, now)
        self.metrics.state_entries.labels(str(store.partition)).set(kept)
        log.info("state sweep", extra={"event": "state_sweep", "partition": store.partition,
                                       "kept": kept, "removed": len(changes)})
        return [Output(self.changelog, key, value, store.partition) for key, value in changes]


def read_input(contract: str, record: Record, settings: Settings) -> list[Document]:
    """The documents of one input record: Meta's body translated, or one contract document.

    The tenant of a Meta body is the record's tenant_id header, else the tenant map; the time
    of a change Meta does not date is the record's timestamp.
    """
    if contract == "outbound_message":
        return [(contract, decode(contract, record.value, settings.max_message_bytes))]
    document = parse_json(record.value, settings.max_message_bytes)
    return webhooks.read(contract, document, record.timestamp or time.time(),
                         webhooks.header_tenant(record.headers), settings.tenant_map)


def unwrap(value: bytes | None) -> tuple[str, dict[str, Any]]:
    envelope = orjson.loads(value or b"{}")
    return envelope["c"], envelope["d"]


@dataclass(frozen=True, slots=True)
class Verdict:
    key: str
    record: dict[str, Any]
    decision: Decision
    enrichment: Enrichment
    recategorized: str | None = None  # the category Meta announced for later, if any


def judge(message: dict[str, Any], state: RecipientState, policies: PolicySet,
          catalog_table: CatalogTable, now: float) -> Verdict:
    """Gather the inputs of the pure core for one message, call it, shape the output record."""
    entry = upcoming = None
    if message["kind"] == "template":
        template = message["template"]
        entry, upcoming = catalog.lookup_with_upcoming(
            catalog_table, message["tenant_id"], template["name"], template["language"], now)
    enrichment = enrich(message, entry)
    decision = decide(message, enrichment, state, entry,
                      policies.for_tenant(message["tenant_id"]), now)
    build = outputs.accepted if decision.accepted else outputs.rejection
    return Verdict(outputs.output_key(message, enrichment),
                   build(message, enrichment, decision, now), decision, enrichment,
                   upcoming["category"] if upcoming else None)
