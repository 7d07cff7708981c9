"""The tenant stage: a tenant's messaging-limit count, kept in one partition (its ledger key's).

A send that needs a slot (processors.core.step) is counted here, exactly once, whatever worker
decided it: in the same transaction when this worker holds the tenant's partition, else from a
`slot` envelope sent through the repartition topic. The stage publishes the decision; a send it
refuses gives its pair budget back to its user's partition (a `refund` envelope).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.core import outputs, step
from processors.core.judge import Verdict
from processors.core.policy import Policy
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st
from processors.core.policy.engine import Decision, enrich
from processors.core.policy.state import state_key
from processors.runtime import catalog
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Output, Tally
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import envelopes, tenant_slots
from processors.runtime.gate.batch_state import BatchState
from processors.runtime.gate.envelopes import Envelope
from processors.runtime.metrics import GateMetrics
from processors.runtime.policy_feed import PolicyHolder

# document, verdict, now, consumed, out, tally: a decision's output record, counted and timed
Publish = Callable[[dict[str, Any], Verdict, float, float, list[Output], Tally], None]


class TenantStage:
    def __init__(self, partitions: int, holder: PolicyHolder, catalog_table: CatalogReplica,
                 state: BatchState, send: envelopes.Send, publish: Publish) -> None:
        self.partitions = partitions
        self.holder = holder
        self.catalog_table = catalog_table
        self.state = state
        self.send = send
        self.publish = publish
        self.partition_of: dict[str, int] = {}  # tenant -> its stage's partition
        # tenant -> (partition, slots in use, limit), published as gauges after a commit
        self.levels: dict[str, tuple[int, int, int]] = {}
        self.levels_changed: set[str] = set()  # the tenants whose level a batch set

    def partition(self, tenant: str) -> int:
        """The tenant stage's partition (its ledger key's), hashed once per tenant."""
        partition = self.partition_of.get(tenant)
        if partition is None:
            partition = self.partition_of[tenant] = partition_for(
                tenant_slots.ledger_key(tenant), self.partitions)
        return partition

    def limit_of(self, tenant: str, policy: Policy, clock: float) -> int | None:
        return ml.effective_limit(policy, *catalog.learned_limit(self.catalog_table, tenant,
                                                                  clock))

    def admit(self, envelope: Envelope, store: PartitionStore, out: list[Output],
              tally: Tally, now: float, consumed: float, accepted: Verdict | None = None,
              limit: int | None = None) -> tuple[Verdict, bool]:
        """In the tenant's partition: count the send against the tenant's slots (or find the
        user already counted), publish the decision; a refused send's pair budget goes back
        to its user. accepted: the user partition's verdict, when it steps in directly (it
        then also does the refund's work itself, and keeps the slot it opened in the user's
        record: no slot record here), with the limit it found in force. Returns the verdict
        and whether a slot opened."""
        tenant, head, document = envelope["tenant"], envelope["head"], envelope["document"]
        policy = self.holder.current.for_tenant(tenant)
        if accepted is None:  # forwarded: the rule may have been switched off meanwhile
            verdict = self.accepted_verdict(envelope, now)
            limit = self.limit_of(tenant, policy, now) if ml.in_force(policy, now) else None
        else:
            verdict = accepted
        opened = False
        if limit is not None:
            # A slot opened by a forwarded send (the stage was elsewhere then) is kept here.
            slot_key = tenant_slots.slot_key(tenant, state_key(tenant, head))
            stage = self.state.load_stage(store, tenant_slots.ledger_key(tenant), now)
            admission = ml.admit(tenant_slots.user_slot(self.state.load_raw(store, slot_key),
                                                        now),
                                 stage.used, stage.oldest, limit, now)
            if admission.opens_slot:
                opened = True
                if accepted is None:
                    self.state.put_raw(store, slot_key, tenant_slots.slot_bytes(now))
                tenant_slots.count_slot(stage, now)
            self.levels[tenant] = (store.partition, stage.used, limit)
            self.levels_changed.add(tenant)
            verdict = step.settle(verdict, admission, document, policy, now)
        self.publish(document, verdict, now, consumed, out, tally)
        if accepted is None and not verdict.decision.accepted:
            self.send(out, state_key(tenant, head), envelopes.refund(
                tenant, head, document["message_id"], document.get("business_number") or "",
                verdict.decision.error_code or ""))
        return verdict, opened

    def accepted_verdict(self, envelope: Envelope, now: float) -> Verdict:
        """The user partition's accepted verdict, made again from what the envelope carries."""
        document = envelope["document"]
        entry, _ = catalog.template_of(self.catalog_table, document, now)
        enrichment = enrich(document, entry, envelope["linked_number"])
        policy = self.holder.current.for_tenant(document["tenant_id"])
        decision = Decision(True, None, None, None, False, None, (),
                            tuple(envelope["monitored"]), policy.id, policy.version)
        return Verdict(outputs.output_key(document, enrichment),
                       outputs.accepted(document, enrichment, decision, now), decision,
                       enrichment, envelope["recategorized"])

    def refund(self, envelope: Envelope, store: PartitionStore) -> None:
        """In the user's partition: the send was refused after all; its pair budget and its
        outcome are set right."""
        tenant = envelope["tenant"]
        key = state_key(tenant, envelope["head"])
        interval = self.holder.current.for_tenant(tenant).parameters.pair_rate_interval_seconds
        state = st.without_send(self.state.load(store, key), envelope["business_number"],
                                interval)
        self.state.put(store, key, st.with_outcome(state, envelope["message_id"],
                                                   envelope["outcome"]))

    def released(self, partitions: set[int], metrics: GateMetrics) -> None:
        """Partitions leave this worker: their tenants' slot gauges are the new owner's."""
        for tenant, (partition, _, _) in list(self.levels.items()):
            if partition in partitions:
                del self.levels[tenant]
                metrics.forget_slots(tenant)

    def counted(self, metrics: GateMetrics) -> None:
        """The batch committed: the slot gauges of the tenants it counted."""
        for tenant in self.levels_changed:
            level = self.levels.get(tenant)
            if level is not None:
                metrics.slots(tenant, level[1], level[2])
        self.levels_changed.clear()
