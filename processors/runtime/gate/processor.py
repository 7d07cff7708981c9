"""GateProcessor: what the engine runs for every record of the gate's input topics.

    handle     decode (or dead-letter), then per document:
    route      co-partition: re-key to the partition of the recipient's identity, or forward a
               linked BSUID's document to its number's partition (envelopes)
    in_group   in the user's partition: a state event changes the user's records (and links
               identities: linking.py); an outbound message takes the step
               (processors.core.step), whose verdict is published here or, when the tenant's
               messaging limit must count it, at the tenant stage (tenant_stage.py)

The batch's state is read and written through batch_state.py; the check API's read path is
preview.py. No Kafka I/O here: the engine's tasks produce what this returns in one transaction
with the input offsets.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from processors.core import step, webhooks
from processors.core.decode import DecodeError, decode, parse_json
from processors.core.judge import Verdict
from processors.core.policy import Policy, PolicySet, RecipientState
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.policy.state import REDUCERS, state_key
from processors.core.timeutil import parse_rfc3339
from processors.core.webhooks import Document
from processors.runtime import catalog, dead_letters
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.processor import LocalStores
from processors.runtime.engine.records import Output, Record, Tally
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import envelopes, recipient_state, tenant_slots
from processors.runtime.gate.batch_state import BatchState
from processors.runtime.gate.linking import Linking
from processors.runtime.gate.preview import Previews
from processors.runtime.gate.recipient_state import member_key, recipient_identity, user_state
from processors.runtime.gate.tenant_stage import TenantStage
from processors.runtime.metrics import NONE, BatchedHistogram, GateMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

log = logging.getLogger(__name__)

ROUTED = frozenset({"outbound_message", *REDUCERS})


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
        self.dedup = settings.dedup_seconds > 0
        # Every input topic but the catalog's (the catalog agent reads that one).
        self.contracts = {topic: contract for topic, contract in topics.contracts().items()
                          if topic != topics.templates}
        self.state = BatchState(settings.changelog_topic)
        self.send = envelopes.Repartition(settings.repartition_topic, settings.partitions).send
        self.linking = Linking(self.state, self.send)
        self.stage = TenantStage(settings.partitions, holder, catalog_table, self.state,
                                 self.send, self.publish)
        self.previews = Previews(settings.partitions, holder, catalog_table, self.dedup)
        # Retention by policy (id) of the policy set it was made for (see retention()).
        self.retained_for: PolicySet | None = None
        self.retained: dict[int, tuple[Policy, st.Retention]] = {}
        # Each decision's latency and age, added to the histograms once per batch.
        self.latencies = BatchedHistogram(metrics.decision_latency)
        self.ages = BatchedHistogram(metrics.event_age)
        # partition -> this worker's store for it in the batch being processed, or None: a
        # tenant's partition held here is stepped into directly (same transaction), not
        # through the repartition topic. Set by the stream loop.
        self.local: LocalStores = lambda _: None

    # -- the engine's Processor ----------------------------------------------------------

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
            envelope = envelopes.read(record.value)
            kind = envelope["kind"]
            if kind == envelopes.REKEY:  # re-keyed to its identity's partition
                self.route(record, envelope["contract"], envelope["document"], store, out,
                           tally, now)
            elif kind == envelopes.MEMBER:  # to a BSUID, forwarded to its number's partition
                self.in_group(envelope["head"], record, envelope["contract"],
                              envelope["document"], store, out, tally, now)
            elif kind == envelopes.SLOT:  # the tenant stage: a send that needs a slot
                self.stage.admit(envelope, store, out, tally, now, record.consumed)
            elif kind == envelopes.REFUND:  # the user's partition: the stage refused a send
                self.stage.refund(envelope, store)
            else:
                self.linking.step(envelope, store, out, now)
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

    def flush(self, out: list[Output]) -> None:
        """The end of a batch: every changed state staged in its store, its changelog record
        among the batch's outputs (the same transaction). Call before committing."""
        self.state.flush(out)
        self.observed()

    def forget(self) -> None:
        """A batch that will not commit: drop what it read and changed."""
        self.state.forget()
        self.observed()  # its decisions were made (and timed) all the same

    def released(self, partitions: set[int]) -> None:
        self.stage.released(partitions, self.metrics)

    def counted(self, tally: Tally) -> None:
        """The batch committed: count what it did."""
        metrics = self.metrics
        self.stage.counted(metrics)
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

    # -- the gate's steps ------------------------------------------------------------------

    def route(self, record: Record, contract: str, document: dict[str, Any],
              store: PartitionStore, out: list[Output], tally: Tally, now: float) -> None:
        """To the partition of the user's head identity, unless this is it."""
        identity = recipient_identity(contract, document)
        if identity is None:
            if contract == "outbound_message":  # decided as INVALID_RECIPIENT; no state
                self.decide(record, document, None, store, out, tally, now)
            else:
                out.append(self.dead_letter(record, DecodeError(
                    "schema_invalid", f"{REDUCERS[contract][1]} is not a valid phone number "
                    "or business-scoped user ID"),
                    tally, now))
            return
        key = state_key(document["tenant_id"], identity)
        if record.partition != partition_for(key, self.partitions):
            self.send(out, key, envelopes.rekey(contract, document))
            tally[("rekeyed",)] += 1
            return
        own = self.state.load(store, key)
        # A BSUID linked to a number, or an old number that follows its new one: its user is
        # decided there. Not a number change naming this number as the new one: that is
        # taken here, where the number may head its user again (a change back).
        if own.home is not None and not (contract != "outbound_message"
                                         and ids.changes_number(document)):
            head = state_key(document["tenant_id"], own.home[0])
            if partition_for(head, self.partitions) != record.partition:
                self.send(out, head, envelopes.member(own.home[0], contract, document))
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
        """A document in the partition of its user's head identity (the number the addressed
        BSUID is linked to, or the addressed identity itself): the states of every identity
        of the user are here, in the head's own record and its members' records."""
        tenant = document["tenant_id"]
        if addressed is None:  # forwarded: the identity the document is addressed to
            addressed = recipient_identity(contract, document)
        assert addressed is not None
        if head_state is None:
            head_state = self.state.load(store, state_key(tenant, head))
        members = ids.members(head_state)
        if addressed != head and addressed not in members:
            # The number let this BSUID go after it was forwarded: back to its own partition,
            # which has heard of the release before this record (same producer, same order).
            self.send(out, state_key(tenant, addressed), envelopes.rekey(contract, document))
            tally[("rekeyed",)] += 1
            return
        if contract != "outbound_message":
            target = state_key(tenant, head) if addressed == head \
                else member_key(tenant, head, addressed)
            if addressed == head:
                field = REDUCERS[contract][1]
                for kind, member in ids.named_links(document, document[field]):
                    self.linking.link(tenant, head, kind, member,
                                      parse_rfc3339(document["timestamp"]), store, out)
            reducer, _ = REDUCERS[contract]
            self.state.put(store, target, st.prune(reducer(self.state.load(store, target),
                                                            document), now,
                                                    self.retention(tenant)))
            tally[("state", contract)] += 1
            return
        combined = user_state(tenant, head, head_state, members,
                              functools.partial(self.state.load, store), now)
        self.decide(record, document, step.User(head, head_state, combined, addressed),
                    store, out, tally, now)

    def decide(self, record: Record, document: dict[str, Any], user: step.User | None,
               store: PartitionStore, out: list[Output], tally: Tally, now: float) -> None:
        """The step of an outbound message (processors.core.step), its verdict published here
        or at the tenant stage, and the user's record after it."""
        tenant = document["tenant_id"]
        policy = self.holder.current.for_tenant(tenant)
        entry, upcoming = catalog.template_of(self.catalog_table, document, now)
        decided = step.decide(document, user, entry, upcoming, policy, now,
                              lambda: catalog.learned_limit(self.catalog_table, tenant, now),
                              self.dedup)
        if decided.verdict is None:
            # The same message_id again (an upstream retry): its decision is already out.
            log.info("duplicate input dropped", extra={
                "event": "duplicate", "tenant": tenant, "message_id": document["message_id"]})
            tally[("duplicate",)] += 1
            return
        verdict, opened = decided.verdict, False
        if decided.slot_limit is None or user is None:
            self.publish(document, verdict, now, record.consumed, out, tally)
        else:
            # The tenant's count decides, at the tenant stage: here when this worker holds
            # the tenant's partition (the same transaction), else through the repartition
            # topic (the stage publishes the decision and gives back the pair budget of a
            # send it refuses).
            envelope = envelopes.slot(tenant, user.head, user.linked_number, document,
                                      verdict.decision.monitored, verdict.recategorized)
            local = self.local(self.stage.partition(tenant))
            if local is None:
                self.send(out, tenant_slots.ledger_key(tenant), envelope)
            else:
                verdict, opened = self.stage.admit(envelope, local, out, tally, now,
                                                   record.consumed, verdict,
                                                   decided.slot_limit)
        if user is None:
            return
        # What a decision records (its message id, the pair budget it used, the slot it
        # opened) is the user's: it goes in the head's record, so that one budget counts the
        # sends to every identity. A send the tenant stage refuses is set right by its refund.
        recorded = step.recorded(user.record, document, verdict, policy, now, self.dedup,
                                 opened)
        if recorded is not user.record:
            self.state.put(store, state_key(tenant, user.head),
                           st.prune(recorded, now, self.retention(tenant)))

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

    def observed(self) -> None:
        self.latencies.flush()
        self.ages.flush()

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

    def dead_letter(self, record: Record, error: DecodeError, tally: Tally,
                    now: float) -> Output:
        key, value = dead_letters.encode(record.topic, record.partition, record.offset,
                                         record.key, record.value, record.headers, error, now)
        tally[("dead_letter", record.topic, error.reason)] += 1
        return Output(self.settings.topics.dlq, key, value)

    def sweep(self, store: PartitionStore, now: float) -> Iterator[list[Output]]:
        """Expired state of a partition deleted, a chunk of changelog records at a time."""
        kept = removed = 0
        for counted, changes in recipient_state.sweep(store, self.holder.current,
                                                      self.settings.dedup_seconds, now):
            kept, removed = counted, removed + len(changes)
            if changes:
                yield [Output(self.changelog, key, value, store.partition)
                       for key, value in changes]
        self.metrics.state_entries.labels(str(store.partition)).set(kept)
        log.info("state sweep", extra={"event": "state_sweep", "partition": store.partition,
                                       "kept": kept, "removed": removed})


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
