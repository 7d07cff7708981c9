"""Routing: decode -> co-partition by recipient -> state or decision -> output records.

No Kafka I/O here: processors.runtime's tasks consume the records, call GateProcessor.handle and
produce what it returns in one transaction with the input offsets.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processors.core import outputs, step, webhooks
from processors.core.decode import DecodeError, decode, parse_json
from processors.core.enrich import parse_recipient
from processors.core.judge import Verdict, judge
from processors.core.policy import (
    EMPTY,
    Policy,
    PolicySet,
    RecipientState,
    explain,
)
from processors.core.policy import identity as ids
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st
from processors.core.policy.engine import Decision, enrich
from processors.core.policy.state import REDUCERS, state_key
from processors.core.timeutil import parse_rfc3339
from processors.core.webhooks import Document
from processors.runtime import catalog, dead_letters
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.processor import LocalStores
from processors.runtime.engine.records import Output, Record, Tally
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import recipient_state, tenant_slots
from processors.runtime.metrics import NONE, BatchedHistogram, GateMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

log = logging.getLogger(__name__)

ROUTED = frozenset({"outbound_message", *REDUCERS})
# Kinds of records on the repartition topic besides a re-keyed input (no kind): a document
# forwarded to the partition of the number its BSUID is linked to, and the steps of linking;
# an accepted send that needs a messaging-limit slot, to the tenant's partition, and the
# pair budget a refused one gives back, to its user's.
MEMBER, CLAIM, RELEASE, ADOPT, RETURN = "member", "claim", "release", "adopt", "return"
SLOT, REFUND = "slot", "refund"


def member_key(tenant_id: str, number: str, member: str) -> str:
    """The record of a BSUID's state kept in its number's partition, beside the number's."""
    return f"{tenant_id}:{number}#{member}"


def recipient_identity(contract: str, document: dict[str, Any]) -> str | None:
    """The E.164 number or BSUID a routed document is about; None when it is neither."""
    if contract == "outbound_message":
        return parse_recipient(document["recipient"], document.get("recipient_region")).identity
    return parse_recipient(document[REDUCERS[contract][1]]).identity


def recipient_key(contract: str, document: dict[str, Any]) -> str | None:
    """tenant_id:identity of any routed contract; None when the recipient is not valid."""
    identity = recipient_identity(contract, document)
    return state_key(document["tenant_id"], identity) if identity else None


def user_state(tenant: str, head: str, head_state: RecipientState, members: Sequence[str],
               load: Callable[[str], RecipientState], now: float) -> RecipientState:
    """One user's state: its head identity's record and its linked BSUIDs' member records."""
    return st.combine([head_state, *(load(member_key(tenant, head, member))
                                     for member in members)], now)


# partition -> its committed state (key -> state), or None when the partition is not here
StateReader = Callable[[int], Callable[[str], RecipientState] | None]


@dataclass(frozen=True, slots=True)
class Preview:
    """A check's answer: the record the gate would publish, or the partition whose owner can
    answer (with the user's head identity when it was found on the way), or that the user's
    link is changing (ask again)."""

    record: dict[str, Any] | None = None
    partition: int | None = None
    head: str | None = None
    moving: bool = False


class GateProcessor:
    """One input record -> state changes and output records, for the partition that owns it.

    Everything about one tenant:recipient meets in one partition: the outbound topic, the
    state topics, the webhooks topic and the repartition topic have the same partition count,
    and a record whose partition is not the one its normalised key hashes to is re-keyed
    through the repartition topic; the rest are handled where they are.
    """

    def __init__(self, settings: Settings, holder: PolicyHolder, catalog_table: CatalogReplica,
                 metrics: GateMetrics) -> None:
        topics = settings.topics
        self.settings = settings
        self.holder = holder
        self.catalog_table = catalog_table
        self.metrics = metrics
        self.partitions = settings.partitions
        self.rekeyed = settings.repartition_topic
        self.changelog = settings.changelog_topic
        # Every input topic but the catalog's (the catalog agent reads that one).
        self.contracts = {topic: contract for topic, contract in topics.contracts().items()
                          if topic != topics.templates}
        # The batch's recipient states, read once and written back once (flush): a busy
        # recipient's state is decoded and encoded once per batch, not once per record, and
        # makes one changelog record per batch.
        self.cached: dict[tuple[int, str], RecipientState] = {}
        self.dirty: dict[tuple[int, str], PartitionStore] = {}
        # Retention by policy (id) of the policy set it was made for (see retention()).
        self.retained_for: PolicySet | None = None
        self.retained: dict[int, tuple[Policy, st.Retention]] = {}
        # Each decision's latency and age, added to the histograms once per batch.
        self.latencies = BatchedHistogram(metrics.decision_latency)
        self.ages = BatchedHistogram(metrics.event_age)
        # The tenant stage's records (slots, ledgers: bytes), read and written once per batch
        # like recipient states.
        self.raw: dict[tuple[int, str], bytes | None] = {}
        self.raw_dirty: dict[tuple[int, str], PartitionStore] = {}
        self.stages: dict[tuple[int, str], tenant_slots.Stage] = {}  # decoded once a batch
        self.stages_dirty: dict[tuple[int, str], PartitionStore] = {}
        self.stage_partitions: dict[str, int] = {}  # tenant -> its stage's partition
        # partition -> this worker's store for it in the batch being processed, or None: a
        # tenant's partition held here is stepped into directly (same transaction), not
        # through the repartition topic. Set by the stream loop.
        self.local: Callable[[int], PartitionStore | None] = lambda _: None
        # tenant -> (partition, slots in use, limit), published as gauges after a commit
        self.slot_levels: dict[str, tuple[int, int, int]] = {}
        self.levels_changed: set[str] = set()  # the tenants whose level a batch set

    def retention(self, tenant: str) -> st.Retention:
        """What a tenant's state keeps; one per policy of the policy set in force (it was
        made anew for every record)."""
        policies = self.holder.current
        if policies is not self.retained_for:
            self.retained_for, self.retained = policies, {}
        policy = policies.for_tenant(tenant)
        kept = self.retained.get(id(policy))
        if kept is None or kept[0] is not policy:
            kept = self.retained[id(policy)] = (policy, recipient_state.retention(
                policies, tenant, self.settings.dedup_seconds))
        return kept[1]

    @property
    def sources(self) -> list[str]:
        return [*self.contracts, self.rekeyed]

    def attach(self, local: LocalStores) -> None:
        self.local = local

    def committed_reader(self, store: PartitionStore) -> Callable[[str], RecipientState]:
        return lambda key: recipient_state.load_committed(store, key)

    def handle(self, record: Record, store: PartitionStore, out: list[Output], tally: Tally,
               now: float) -> None:
        """now: the batch's clock. tally: what to count once the batch has committed."""
        if record.topic == self.rekeyed:
            envelope = orjson.loads(record.value or b"{}")
            kind = envelope.get("k")
            if kind is None:  # a record re-keyed to its identity's partition
                self.route(record, envelope["c"], envelope["d"], store, out, tally, now)
            elif kind == MEMBER:  # addressed to a BSUID, forwarded to its number's partition
                self.in_group(envelope["h"], record, envelope["c"], envelope["d"], store, out,
                              tally, now)
            elif kind == SLOT:  # the tenant stage: a send that needs a slot
                self.slot_step(envelope, store, out, tally, now, record.consumed)
            elif kind == REFUND:  # the user's partition: a send the tenant stage refused
                self.refund_step(envelope, store, out, now)
            else:
                self.link_step(kind, envelope, store, out, now)
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
        identity = recipient_identity(contract, document)
        if identity is None:
            if contract == "outbound_message":  # decided as INVALID_RECIPIENT; no state
                self.emit(document, EMPTY, now, record.consumed, out, tally)
            else:
                out.append(self.dead_letter(record, DecodeError(
                    "schema_invalid", f"{REDUCERS[contract][1]} is not a valid phone number "
                    "or business-scoped user ID"),
                    tally, now))
            return
        key = state_key(document["tenant_id"], identity)
        home = partition_for(key, self.partitions)
        if record.partition != home:
            self.send_on(out, key, {"c": contract, "d": document})
            tally[("rekeyed",)] += 1
            return
        own = self.load(store, key)
        if own.home is not None:  # a BSUID linked to a number: its user is decided there
            head = state_key(document["tenant_id"], own.home[0])
            if partition_for(head, self.partitions) != record.partition:
                self.send_on(out, head, {"k": MEMBER, "h": own.home[0], "c": contract,
                                         "d": document})
                tally[("rekeyed",)] += 1
                return
            self.in_group(own.home[0], record, contract, document, store, out, tally, now,
                          addressed=identity)
            return
        self.in_group(identity, record, contract, document, store, out, tally, now, own,
                      identity)

    def in_group(self, head: str, record: Record, contract: str, document: dict[str, Any],
                 store: PartitionStore, out: list[Output], tally: Tally, now: float,
                 head_state: RecipientState | None = None,
                 addressed: str | None = None) -> None:
        """Handle a document in the partition of its user's head identity (the number the
        addressed BSUID is linked to, or the addressed identity itself): the states of every
        identity of the user are here, in the head's own record and its members' records."""
        tenant = document["tenant_id"]
        if addressed is None:  # forwarded: the identity the document is addressed to
            addressed = recipient_identity(contract, document)
        assert addressed is not None
        head_key = state_key(tenant, head)
        if head_state is None:
            head_state = self.load(store, head_key)
        members = ids.members(head_state)
        if addressed != head and addressed not in members:
            # The number let this BSUID go after it was forwarded: back to its own partition,
            # which has heard of the release before this record (same producer, same order).
            self.send_on(out, state_key(tenant, addressed), {"c": contract, "d": document})
            tally[("rekeyed",)] += 1
            return
        target = head_key if addressed == head else member_key(tenant, head, addressed)
        dedup = self.settings.dedup_seconds
        keep = self.retention(tenant)
        if contract != "outbound_message":
            if addressed == head:
                field = REDUCERS[contract][1]
                for kind, member in ids.named_links(document, document[field]):
                    self.link(tenant, head, kind, member, parse_rfc3339(document["timestamp"]),
                              store, out, now)
            reducer, _ = REDUCERS[contract]
            self.put(store, out, target,
                     st.prune(reducer(self.load(store, target), document), now, keep))
            tally[("state", contract)] += 1
            return
        combined = user_state(tenant, head, head_state, members,
                              functools.partial(self.load, store), now)
        user = step.User(head, head_state, combined, addressed)
        policy = self.holder.current.for_tenant(tenant)
        entry, upcoming = self.entry_of(document, now)
        decided = step.decide(document, user, entry, upcoming, policy, now,
                              lambda: catalog.learned_limit(self.catalog_table, tenant, now),
                              dedup > 0)
        if decided.verdict is None:
            # The same message_id again (an upstream retry): its decision is already out.
            log.info("duplicate input dropped", extra={
                "event": "duplicate", "tenant": tenant,
                "message_id": document["message_id"]})
            tally[("duplicate",)] += 1
            return
        verdict, opened = decided.verdict, False
        if decided.slot_limit is not None:
            # The tenant's count decides, at the tenant stage: here when this worker holds
            # the tenant's partition (the same transaction), else through the repartition
            # topic (the stage publishes the decision and gives back the pair budget of a
            # send it refuses).
            envelope = {"k": SLOT, "t": tenant, "h": head, "l": user.linked_number,
                        "d": document, "m": verdict.decision.monitored,
                        "r": verdict.recategorized}
            stage = self.local(self.stage_partition(tenant))
            if stage is None:
                self.send_on(out, tenant_slots.ledger_key(tenant), envelope)
            else:
                verdict, opened = self.slot_step(envelope, stage, out, tally, now,
                                                 record.consumed, verdict,
                                                 decided.slot_limit)
        else:
            self.publish(document, verdict, now, record.consumed, out, tally)
        # What a decision records (its message id, the pair budget it used, the slot it
        # opened) is the user's: it goes in the head's record, so that one budget counts the
        # sends to every identity. A send the tenant stage refuses is set right by its refund.
        state = step.recorded(head_state, document, verdict, policy, now, dedup > 0, opened)
        if state is not head_state:
            self.put(store, out, head_key, st.prune(state, now, keep))

    # -- the messaging limit: the tenant stage ---------------------------------------------

    def limit_of(self, tenant: str, policy: Policy, clock: float) -> int | None:
        learned, known = catalog.learned_limit(self.catalog_table, tenant, clock)
        return ml.effective_limit(policy, learned, known)

    def stage_partition(self, tenant: str) -> int:
        """The tenant stage's partition (its ledger key's), hashed once per tenant."""
        partition = self.stage_partitions.get(tenant)
        if partition is None:
            partition = self.stage_partitions[tenant] = partition_for(
                tenant_slots.ledger_key(tenant), self.partitions)
        return partition

    def slot_step(self, step: dict[str, Any], store: PartitionStore, out: list[Output],
                  tally: Tally, now: float, consumed: float,
                  accepted: Verdict | None = None,
                  limit: int | None = None) -> tuple[Verdict, bool]:
        """In the tenant's partition: count the send against the tenant's slots (or find the
        user already counted), publish the decision; a refused send's pair budget goes back
        to its user. accepted: the user partition's verdict, when it steps in directly (it
        then also does the refund's work itself, and keeps the slot it opened in the user's
        record: no slot record here), with the limit it found in force. Returns the verdict
        and whether a slot opened."""
        tenant, head, document = step["t"], step["h"], step["d"]
        policy = self.holder.current.for_tenant(tenant)
        if accepted is None:  # forwarded: the rule may have been switched off meanwhile
            verdict = self.accepted_verdict(document, step, now)
            limit = self.limit_of(tenant, policy, now) if ml.in_force(policy, now) else None
        else:
            verdict = accepted
        opened = False
        if limit is not None:
            # A slot opened by a forwarded send (the stage was elsewhere then) is kept here.
            slot_key = tenant_slots.slot_key(tenant, state_key(tenant, head))
            stage = self.load_stage(store, tenant_slots.ledger_key(tenant), now)
            admission = ml.admit(tenant_slots.user_slot(self.load_raw(store, slot_key), now),
                                 stage.used, stage.oldest, limit, now)
            if admission.opens_slot:
                opened = True
                if accepted is None:
                    self.put_raw(store, slot_key, tenant_slots.slot_bytes(now))
                tenant_slots.count_slot(stage, now)
            self.slot_levels[tenant] = (store.partition, stage.used, limit)
            self.levels_changed.add(tenant)
            verdict = ml.apply(verdict, admission, document, policy, now)
        self.publish(document, verdict, now, consumed, out, tally)
        if accepted is None and not verdict.decision.accepted:
            self.send_on(out, state_key(tenant, head), {
                "k": REFUND, "t": tenant, "h": head, "m": document["message_id"],
                "b": document.get("business_number") or "",
                "o": verdict.decision.error_code or ""})
        return verdict, opened

    def accepted_verdict(self, document: dict[str, Any], step: dict[str, Any],
                         now: float) -> Verdict:
        """The user partition's accepted verdict, made again from what the step carries."""
        entry = None
        if document["kind"] == "template":
            template = document["template"]
            entry, _ = catalog.lookup_with_upcoming(self.catalog_table, document["tenant_id"],
                                                    template["name"], template["language"], now)
        enrichment = enrich(document, entry, step["l"])
        policy = self.holder.current.for_tenant(document["tenant_id"])
        decision = Decision(True, None, None, None, False, None, (), tuple(step["m"]),
                            policy.id, policy.version)
        return Verdict(outputs.output_key(document, enrichment),
                       outputs.accepted(document, enrichment, decision, now), decision,
                       enrichment, step["r"])

    def refund_step(self, envelope: dict[str, Any], store: PartitionStore, out: list[Output],
                    now: float) -> None:
        """In the user's partition: the send was refused after all; its pair budget and its
        outcome are set right."""
        tenant = envelope["t"]
        key = state_key(tenant, envelope["h"])
        interval = self.holder.current.for_tenant(tenant).parameters.pair_rate_interval_seconds
        state = st.without_send(self.load(store, key), envelope["b"], interval)
        self.put(store, out, key, st.with_outcome(state, envelope["m"], envelope["o"]))

    # -- linking: each step runs in the partition that owns the record it changes ---------

    def link(self, tenant: str, number: str, kind: str, member: str, at: float,
             store: PartitionStore, out: list[Output], now: float) -> None:
        """The number's side (in its partition): list the BSUID, release the one it
        replaces (its state goes back to it), and ask the BSUID's partition to follow."""
        head_key = state_key(tenant, number)
        head, replaced, changed = ids.link(self.load(store, head_key), kind, member,
                                           at)
        if not changed:
            if head != self.load(store, head_key):
                self.put(store, out, head_key, head)
            return
        self.put(store, out, head_key, head)
        if replaced is not None:
            history = self.take(store, out, member_key(tenant, number, replaced))
            self.send_on(out, state_key(tenant, replaced), {
                "k": RETURN, "t": tenant, "x": replaced, "from": number,
                "s": st.to_json(history)})
        self.send_on(out, state_key(tenant, member), {
            "k": CLAIM, "t": tenant, "x": member, "h": number, "at": at})

    def link_step(self, kind: str, envelope: dict[str, Any], store: PartitionStore,
                  out: list[Output], now: float) -> None:
        tenant, member = envelope["t"], envelope["x"]
        own_key = state_key(tenant, member)
        if kind == CLAIM:  # the BSUID's partition: follow the number, hand the history over
            own = self.load(store, own_key)
            claimed, previous, changed = ids.claim(own, envelope["h"], envelope["at"])
            if not changed:
                if claimed != own:
                    self.put(store, out, own_key, claimed)
                if claimed.home is not None and claimed.home[0] != envelope["h"]:
                    # A stale link: the BSUID follows a newer number; the claimant lets go.
                    self.send_on(out, state_key(tenant, envelope["h"]), {
                        "k": RELEASE, "t": tenant, "x": member, "from": envelope["h"],
                        "to": claimed.home[0]})
                return
            self.put(store, out, own_key, st.RecipientState(
                home=claimed.home))
            self.adopt(tenant, member, envelope["h"], own.history(), out)
            if previous is not None:  # the number it was linked to hands over its part
                self.send_on(out, state_key(tenant, previous), {
                    "k": RELEASE, "t": tenant, "x": member, "from": previous,
                    "to": envelope["h"]})
        elif kind == RELEASE:  # the old number's partition: let the BSUID go to its new one
            old_key = state_key(tenant, envelope["from"])
            head = self.load(store, old_key)
            if member in ids.members(head):
                self.put(store, out, old_key, ids.unlink(head, member))
            history = self.take(store, out, member_key(tenant, envelope["from"], member))
            self.adopt(tenant, member, envelope["to"], history, out)
        elif kind == ADOPT:  # the number's partition: the BSUID's history joins the user
            moved = st.from_json(envelope["s"])
            head = self.load(store, state_key(tenant, envelope["h"]))
            if member in ids.members(head):
                key = member_key(tenant, envelope["h"], member)
                self.put(store, out, key, st.merge(
                    self.load(store, key), moved, now))
            else:  # released meanwhile: the history goes back to the BSUID
                self.send_on(out, own_key, {"k": RETURN, "t": tenant, "x": member,
                                            "from": envelope["h"], "s": envelope["s"]})
        elif kind == RETURN:  # the BSUID's partition: its history comes back
            moved = st.from_json(envelope["s"])
            own = self.load(store, own_key)
            if own.home is not None and own.home[0] == envelope["from"]:
                own = ids.claim_released(own)
            if own.home is not None:  # linked to another number since: the history goes there
                self.adopt(tenant, member, own.home[0], moved, out)
                return
            self.put(store, out, own_key, st.merge(own, moved, now))
        else:
            raise ValueError(f"unknown repartition record kind {kind!r}")

    def adopt(self, tenant: str, member: str, number: str, history: RecipientState,
              out: list[Output]) -> None:
        if not history.is_empty():
            self.send_on(out, state_key(tenant, number), {
                "k": ADOPT, "t": tenant, "x": member, "h": number,
                "s": st.to_json(history)})

    def take(self, store: PartitionStore, out: list[Output], key: str) -> RecipientState:
        """Remove a member's record from this partition; returns its history."""
        state = self.load(store, key)
        if not state.is_empty():
            self.put(store, out, key, st.EMPTY)
        return state.history()

    def send_on(self, out: list[Output], key: str, envelope: dict[str, Any]) -> None:
        """A record for the partition that owns key, through the repartition topic."""
        out.append(Output(self.rekeyed, key.encode("utf-8"), orjson.dumps(envelope),
                          partition_for(key, self.partitions)))

    def load(self, store: PartitionStore, key: str) -> RecipientState:
        """A record's state as the batch has it so far."""
        slot = (store.partition, key)
        state = self.cached.get(slot)
        if state is None:
            state = self.cached[slot] = recipient_state.load(store, key)
        return state

    def put(self, store: PartitionStore, out: list[Output], key: str,
            state: RecipientState) -> None:
        """A record's new state; staged in the store with its changelog record at flush()."""
        slot = (store.partition, key)
        self.cached[slot] = state
        self.dirty[slot] = store

    def load_raw(self, store: PartitionStore, key: str) -> bytes | None:
        """A tenant-stage record as the batch has it so far."""
        slot = (store.partition, key)
        if slot not in self.raw:
            self.raw[slot] = store.get(key.encode("utf-8"))
        return self.raw[slot]

    def put_raw(self, store: PartitionStore, key: str, value: bytes | None) -> None:
        slot = (store.partition, key)
        self.raw[slot] = value
        self.raw_dirty[slot] = store

    def load_stage(self, store: PartitionStore, key: str, now: float) -> tenant_slots.Stage:
        """A tenant's ledger as the batch has it so far, open at the batch's clock."""
        slot = (store.partition, key)
        stage = self.stages.get(slot)
        if stage is None:
            stage = tenant_slots.stage_at(tenant_slots.read_ledger(self.load_raw(store, key)),
                                          now)
        elif stage.clock != now:  # not the batch's clock (a sweep): count again
            stage = tenant_slots.stage_at(stage.ledger, now, stage.changed)
        self.stages[slot] = stage
        self.stages_dirty[slot] = store  # written at flush() only if it changed
        return stage

    def flush(self, out: list[Output]) -> None:
        """The end of a batch: stage every changed state in its store, and its changelog record
        among the batch's outputs (the same transaction). Call before committing."""
        for (_, key), store in self.dirty.items():
            self.changed(store, out, recipient_state.save(store, key, self.cached[(
                store.partition, key)]))
        for (partition, key), store in self.stages_dirty.items():  # encoded once a batch
            stage = self.stages[(partition, key)]
            if stage.changed:
                self.put_raw(store, key, tenant_slots.ledger_bytes(stage.ledger))
        for (partition, key), store in self.raw_dirty.items():
            raw_key, value = key.encode("utf-8"), self.raw[(partition, key)]
            store.put(raw_key, value)
            self.changed(store, out, (raw_key, value))
        self.forget()

    def forget(self) -> None:
        """A batch that will not commit: drop what it read and changed."""
        self.cached.clear()
        self.dirty.clear()
        self.raw.clear()
        self.raw_dirty.clear()
        self.stages.clear()
        self.stages_dirty.clear()
        self.observed()  # its decisions were made (and timed) all the same

    def observed(self) -> None:
        self.latencies.flush()
        self.ages.flush()

    def changed(self, store: PartitionStore, out: list[Output],
                change: tuple[bytes, bytes | None]) -> None:
        out.append(Output(self.changelog, change[0], change[1], store.partition))

    def entry_of(self, document: dict[str, Any], now: float
                 ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the template's catalog entry in effect now, the category change Meta announced
        for later); (None, None) for a free-form message."""
        if document["kind"] != "template":
            return None, None
        template = document["template"]
        return catalog.lookup_with_upcoming(self.catalog_table, document["tenant_id"],
                                            template["name"], template["language"], now)

    def verdict(self, document: dict[str, Any], state: RecipientState, now: float,
                linked_e164: str | None = None) -> Verdict:
        """The judge, with this worker's catalog and policy in force."""
        entry, upcoming = self.entry_of(document, now)
        return judge(document, state, entry,
                     self.holder.current.for_tenant(document["tenant_id"]), now,
                     linked_e164, upcoming)

    def preview(self, document: dict[str, Any], read: StateReader, now: float,
                head: str | None = None) -> Preview:
        """What the stream would decide for this outbound message now, from committed state,
        recording nothing. read(p) gives partition p's committed state, or None when p is
        not this worker's: the answer then names the partition (and the user's head
        identity, when known) whose owner can answer."""
        identity = recipient_identity("outbound_message", document)
        if identity is None:  # decided as INVALID_RECIPIENT, as the stream does
            return Preview({**self.verdict(document, EMPTY, now).record,
                            "decision": "rejected", "preview": True})
        found = self.find_user(document["tenant_id"], identity, read, now, head)
        if isinstance(found, Preview):
            return found
        user = step.User(found[0], found[1], found[2], identity)
        verdict = self.verdict(document, user.combined, now, user.linked_number)
        record = dict(verdict.record)
        # The stream says it by the topic it writes to; a check says it in the record.
        record["decision"] = "accepted" if verdict.decision.accepted else "rejected"
        record["preview"] = True
        if st.already_decided(user.combined, document["message_id"]):
            record["already_decided"] = True  # the stream would drop it as a repeat
        return Preview(record)

    def recipient(self, tenant: str, identity: str, read: StateReader, now: float,
                  head: str | None = None) -> Preview:
        """What the gate knows of one user (identity: a normalised number or BSUID), from
        committed state; or, as preview(), the partition whose owner can answer."""
        found = self.find_user(tenant, identity, read, now, head)
        if isinstance(found, Preview):
            return found
        head, head_state, combined = found
        return Preview(explain.describe(
            tenant, identity, head, head_state, combined,
            self.holder.current.for_tenant(tenant).parameters, now))

    def find_user(self, tenant: str, identity: str, read: StateReader, now: float,
                  head: str | None) -> tuple[str, RecipientState, RecipientState] | Preview:
        """(head identity, head's record, the user's combined state) of the user an identity
        belongs to, from committed state; a Preview naming where to ask when not here."""
        head_state: RecipientState | None = None
        if head is None:
            key = state_key(tenant, identity)
            loader = read(partition_for(key, self.partitions))
            if loader is None:
                return Preview(partition=partition_for(key, self.partitions))
            own = loader(key)
            head, head_state = (own.home[0], None) if own.home is not None else (identity, own)
        head_key = state_key(tenant, head)
        loader = read(partition_for(head_key, self.partitions))
        if loader is None:
            return Preview(partition=partition_for(head_key, self.partitions), head=head)
        if head_state is None:
            head_state = loader(head_key)
        members = ids.members(head_state)
        if identity != head and identity not in members:
            return Preview(moving=True)  # released while we looked: the link is changing
        return head, head_state, user_state(tenant, head, head_state, members, loader, now)

    def emit(self, document: dict[str, Any], state: RecipientState, now: float,
             consumed: float, out: list[Output], tally: Tally,
             linked_e164: str | None = None) -> Verdict:
        verdict = self.verdict(document, state, now, linked_e164)
        self.publish(document, verdict, now, consumed, out, tally)
        return verdict

    def publish(self, document: dict[str, Any], verdict: Verdict, now: float,
                consumed: float, out: list[Output], tally: Tally) -> None:
        """A decision's output record, counted and timed."""
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
        self.latencies.observe(time.monotonic() - consumed)
        self.ages.observe(max(0.0, now - parse_rfc3339(document["created_at"])))

    def released(self, partitions: set[int]) -> None:
        """Partitions leave this worker: their tenants' slot gauges are the new owner's."""
        for tenant, (partition, _, _) in list(self.slot_levels.items()):
            if partition in partitions:
                del self.slot_levels[tenant]
                self.metrics.forget_slots(tenant)

    def counted(self, tally: Tally) -> None:
        """The batch committed: count what it did."""
        metrics = self.metrics
        for tenant in self.levels_changed:
            level = self.slot_levels.get(tenant)
            if level is not None:
                metrics.slots(tenant, level[1], level[2])
        self.levels_changed.clear()
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
