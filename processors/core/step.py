"""The gate's step for one outbound message, pure: the one sequence the live processor
(processors.runtime.gate.processor) and the offline check (processors.tools.offline) both run,
so the two cannot drift.

    step = decide(message, user, entry, upcoming, policy, clock, learned_limit, dedup)
    if step.slot_limit is not None:    # the tenant's count decides: its slots, wherever kept
        admission = messaging_limit.admit(...)
        verdict = settle(step, admission, message, policy, clock)
    record = recorded(user.record, message, verdict, policy, clock, dedup, admission...)

decide(): the repeat (an idempotency key decided before), judge() with the user's combined
state, and whether the tenant's messaging limit must count the send. settle(): the verdict
once the tenant's slots have spoken. recorded(): the user's record after the decision (the slot
it opened, the pair budget an accepted send uses, the idempotency key).

Where the state lives (a partition's store, a dictionary) and how the tenant's slots are kept
(a ledger in the tenant's partition, in memory) is the caller's; what is decided is this
module's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.core.frozen import quick_init
from processors.core.judge import Verdict, judge
from processors.core.policy import EMPTY, Policy, RecipientState
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st


@quick_init
@dataclass(frozen=True, slots=True)
class User:
    """The user a message is addressed to, as its state is kept.

    head: the identity whose record holds the user (the number a BSUID is linked to, else the
    addressed identity); record: the head's own record; combined: every linked identity's
    state together (state.combine); addressed: the identity the message names."""

    head: str
    record: RecipientState
    combined: RecipientState
    addressed: str

    @property
    def linked_number(self) -> str | None:
        """The number a message to a linked BSUID is decided with (judge's linked_e164)."""
        return self.head if self.addressed != self.head and self.head.startswith("+") \
            else None


@quick_init
@dataclass(frozen=True, slots=True)
class Step:
    """What deciding one message came to: a repeat to drop (no verdict), or a verdict, final
    unless slot_limit is set (then the tenant's slots, at that limit, have the last word)."""

    verdict: Verdict | None
    slot_limit: int | None = None

    @property
    def duplicate(self) -> bool:
        return self.verdict is None


DUPLICATE = Step(None)
# (the limit Meta's webhooks stated for the tenant, whether any was stated): looked up only
# for a send that may need a slot.
LearnedLimit = Callable[[], tuple[int | None, bool]]


def decide(message: dict[str, Any], user: User | None, entry: dict[str, Any] | None,
           upcoming: dict[str, Any] | None, policy: Policy, clock: float,
           learned_limit: LearnedLimit, dedup: bool) -> Step:
    """One message at the clock. user: None when the recipient is not a valid identity (then
    judged with no state: INVALID_RECIPIENT). dedup: drop a message_id already decided."""
    if user is None:
        return Step(judge(message, EMPTY, entry, policy, clock, None, upcoming))
    if dedup and st.already_decided(user.combined, message["message_id"]):
        return DUPLICATE
    verdict = judge(message, user.combined, entry, policy, clock, user.linked_number, upcoming)
    # A user counted in the last 24 hours opens no new slot: no need to ask the tenant. The
    # slot may be on another identity of the user (an old number's: combine keeps it).
    if not verdict.decision.accepted or st.slot_open(user.record, clock) \
            or st.slot_open(user.combined, clock) \
            or not ml.needs_slot(message, verdict, user.combined, policy, clock):
        return Step(verdict)
    return Step(verdict, ml.effective_limit(policy, *learned_limit()))


def settle(verdict: Verdict, admission: ml.Admission, message: dict[str, Any],
           policy: Policy, clock: float) -> Verdict:
    """The verdict once the tenant's slots admitted the send or refused it."""
    return ml.apply(verdict, admission, message, policy, clock)


def recorded(record: RecipientState, message: dict[str, Any], verdict: Verdict,
             policy: Policy, clock: float, dedup: bool, opened_slot: bool = False
             ) -> RecipientState:
    """The head's record after the decision: the slot the send opened, the pair budget an
    accepted send uses (the user's, whichever identity it went to), the idempotency key and
    its outcome. Unchanged for a rejection when dedup is off."""
    if opened_slot:
        record = st.with_slot(record, clock)
    if verdict.decision.accepted:
        record = st.with_send(record, message.get("business_number") or "", clock,
                              policy.parameters.pair_rate_interval_seconds)
    if dedup:
        record = st.with_decided(record, message["message_id"], clock,
                                 verdict.decision.error_code or "")
    return record
