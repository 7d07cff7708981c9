"""The route agent: decode -> co-partition by recipient -> state or decision -> produce.

One agent reads the outbound topic, the three state topics and the repartition topic, all with
the same partition count, so that everything about one tenant:recipient meets in one partition
on one worker, next to that key's state. A record whose partition is not the one its normalised
key hashes to is re-keyed through the repartition topic; the rest are handled where they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from processors import catalog, outputs, recipient_state, webhooks
from processors.catalog import CatalogTable
from processors.dead_letters import DeadLetters
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
from processors.recipient_state import StateTable
from processors.settings import Settings
from processors.timeutil import parse_rfc3339
from processors.webhooks import WEBHOOK, Document

log = logging.getLogger(__name__)

SWEEP = "sweep"
ROUTED = frozenset({"outbound_message", *REDUCERS})


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the Java client)."""
    hashed: int = murmur2(key.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions


def recipient_key(contract: str, document: dict[str, Any]) -> str | None:
    """tenant_id:recipient_e164 of any routed contract; None when the number is not valid."""
    if contract == "outbound_message":
        e164 = parse_recipient(document["recipient"], document.get("recipient_region")).e164
    else:
        e164 = parse_recipient(document[REDUCERS[contract][1]]).e164
    return state_key(document["tenant_id"], e164) if e164 else None


def register(app: faust.App, settings: Settings, holder: PolicyHolder,
             catalog_table: CatalogTable, state_table: StateTable,
             metrics: GateMetrics) -> None:
    topics = settings.topics
    partitions = settings.partitions
    rekeyed_name = settings.repartition_topic
    contracts = {topics.outbound: "outbound_message", topics.statuses: "delivery_status",
                 topics.inbound: "inbound_message", topics.preferences: "user_preference",
                 topics.webhooks: WEBHOOK}
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    sources = app.topic(*contracts, rekeyed_name, **raw)
    rekeyed = app.topic(rekeyed_name, partitions=partitions, **raw)
    accepted = app.topic(topics.accepted, **raw)
    rejected = app.topic(topics.rejected, **raw)
    dead_letters = DeadLetters(app, settings, metrics)

    @app.agent(sources, name="route")
    async def route(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            now = time.time()
            consumed = message.time_in or time.monotonic()
            if message.topic == rekeyed_name:
                contract, document = unwrap(message.value)
                if contract == SWEEP:
                    await sweep_partition(message.partition, now)
                    continue
                await handle(message, contract, document, now, consumed)
                continue
            contract = contracts[message.topic]
            metrics.input_records.labels(message.topic).inc()
            try:
                documents = read_input(contract, message, settings)
            except DecodeError as error:
                await dead_letters.send(message, error)
                continue
            # One Meta body can carry several events, for several recipients: each one goes
            # its own way (handled here, or re-keyed to its home partition).
            for contract, document in documents:
                if contract in ROUTED:
                    await handle(message, contract, document, now, consumed)
                else:  # a catalog change in a body on a state topic: the catalog agent's
                    metrics.webhook_ignored.labels(message.topic, contract).inc()

    async def handle(message: Any, contract: str, document: dict[str, Any], now: float,
                     consumed: float) -> None:
        key = recipient_key(contract, document)
        if key is None:
            if contract == "outbound_message":  # decided as INVALID_RECIPIENT; no state
                emit(document, EMPTY, now, consumed)
            else:
                await dead_letters.send(message, DecodeError(
                    "schema_invalid", f"{REDUCERS[contract][1]} is not a valid number"))
            return
        home = partition_for(key, partitions)
        if message.partition != home:
            rekeyed.send_soon(key=key.encode("utf-8"), partition=home,
                              value=orjson.dumps({"c": contract, "d": document}))
            metrics.repartitioned.inc()
            return
        keep = recipient_state.retention(holder.current, document["tenant_id"],
                                         settings.dedup_seconds)
        if contract != "outbound_message":
            recipient_state.apply_event(state_table, key, contract, document, keep, now)
            metrics.state_events.labels(contract).inc()
            return
        state = recipient_state.load(state_table, key)
        if st.already_decided(state, document["message_id"]):
            # Redelivered after a rebalance or restart: its decision is already out.
            log.info("duplicate input dropped", extra={
                "event": "duplicate", "tenant": document["tenant_id"],
                "message_id": document["message_id"]})
            metrics.duplicates.inc()
            return
        emit(document, state, now, consumed)
        if not settings.dedup_seconds:  # idempotency switched off: nothing to remember
            return
        recipient_state.store(state_table, key, st.prune(
            st.with_decided(state, document["message_id"], now), now, keep))

    def emit(document: dict[str, Any], state: RecipientState, now: float,
             consumed: float) -> None:
        verdict = judge(document, state, holder.current, catalog_table, now)
        # send_soon: into the producer's buffer without a round of the event loop per record;
        # Faust flushes that buffer before it commits the input offsets.
        (accepted if verdict.decision.accepted else rejected).send_soon(
            key=verdict.key.encode("utf-8"), value=orjson.dumps(verdict.record))
        count(metrics, document, verdict)
        if verdict.recategorized is not None:  # Meta announced a new category, due later
            metrics.sends_before_recategorization.labels(
                metrics.tenant(document["tenant_id"]),
                verdict.enrichment.template_category or NONE, verdict.recategorized).inc()
        metrics.decision_latency.observe(time.monotonic() - consumed)
        metrics.event_age.observe(max(0.0, now - parse_rfc3339(document["created_at"])))

    async def sweep_partition(partition: int, now: float) -> None:
        kept, removed = await recipient_state.sweep(
            state_table, partition, lambda key: partition_for(key, partitions),
            holder.current, settings.dedup_seconds, now)
        metrics.state_entries.labels(str(partition)).set(kept)
        log.info("state sweep", extra={"event": "state_sweep", "partition": partition,
                                       "kept": kept, "removed": removed})

    @app.timer(interval=settings.state_sweep_seconds, on_leader=True)  # type: ignore[untyped-decorator]
    async def schedule_sweeps() -> None:
        # One marker per partition: each partition's owner sweeps its own keys in stream
        # context, so the deletions reach the right changelog partition.
        marker = orjson.dumps({"c": SWEEP, "d": {}})
        for partition in range(partitions):
            await rekeyed.send(key=SWEEP.encode(), value=marker, partition=partition)


def read_input(contract: str, message: Any, settings: Settings) -> list[Document]:
    """The documents of one input record: Meta's body translated, or one contract document.

    The tenant of a Meta body is the record's tenant_id header, else the tenant map; the time
    of a change Meta does not date is the record's timestamp.
    """
    if contract == "outbound_message":
        return [(contract, decode(contract, message.value, settings.max_message_bytes))]
    document = parse_json(message.value, settings.max_message_bytes)
    return webhooks.read(contract, document, message.timestamp or time.time(),
                         webhooks.header_tenant(message.headers), settings.tenant_map)


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


def count(metrics: GateMetrics, message: dict[str, Any], verdict: Verdict) -> None:
    decision, enrichment = verdict.decision, verdict.enrichment
    metrics.count_decision(message["tenant_id"], "accepted" if decision.accepted else "rejected",
                           enrichment.template_category or NONE, decision.error_code or NONE,
                           enrichment.recipient.region or "unknown", decision.monitored)


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
