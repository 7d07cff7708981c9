"""judge(): one message in, the record the gate publishes for it out. Pure.

The one entry to the policy core for every caller: the live worker
(processors.runtime.gate.processor, through processors.core.step), the offline check
(processors.tools.offline, the same step) and any API. The caller gathers the inputs from where it
keeps them (the catalog table or a file's catalog; the recipient state of a partition or of a
dictionary) and calls this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.core import outputs
from processors.core.frozen import quick_init
from processors.core.policy import Decision, Enrichment, Policy, RecipientState, decide, enrich


@quick_init
@dataclass(frozen=True, slots=True)
class Verdict:
    key: str  # tenant_id:identity, the output record's key
    record: dict[str, Any]  # the accepted message or the rejection, as published
    decision: Decision
    enrichment: Enrichment
    recategorized: str | None = None  # the category Meta announced for later, if any


def judge(message: dict[str, Any], state: RecipientState, catalog_entry: dict[str, Any] | None,
          policy: Policy, clock: float, linked_e164: str | None = None,
          upcoming: dict[str, Any] | None = None) -> Verdict:
    """Enrich, decide and shape the output record of one message at the clock.

    state: the user's state (all linked identities combined); catalog_entry: the template's
    entry in effect at the clock (None for free-form or unknown); upcoming: the next category
    change Meta announced for the template, if any; linked_e164: the number a BSUID recipient
    is linked to."""
    enrichment = enrich(message, catalog_entry, linked_e164)
    decision = decide(message, enrichment, state, catalog_entry, policy, clock)
    build = outputs.accepted if decision.accepted else outputs.rejection
    return Verdict(outputs.output_key(message, enrichment),
                   build(message, enrichment, decision, clock), decision, enrichment,
                   upcoming["category"] if upcoming else None)
