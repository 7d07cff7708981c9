"""Rule MESSAGING_LIMIT_REACHED: a tenant's new conversations within Meta's messaging limit. Pure.

Meta's "Messaging limits"
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messaging-limits,
updated 2026-05-08): since 2025-10-07 a business portfolio (one tenant) may deliver messages
outside the customer service window to at most its limit of unique users in a moving 24 hours:
250 for a new portfolio, then 2,000, 10,000, 100,000 or unlimited; beyond it messages are not
delivered. Meta states the limit by webhook (processors.core.webhooks, contract
``messaging_limit``): ``business_capability_update`` (``max_daily_conversations_per_business``:
an integer, -1 for unlimited, or a ``TIER_…`` value; reference updated 2026-05-21) and
``phone_number_quality_update`` (``max_daily_conversations_per_business`` / ``current_limit``:
``TIER_250``, ``TIER_2K``, ``TIER_10K``, ``TIER_100K``, ``TIER_UNLIMITED``; reference updated
2026-05-21). A policy may pin the limit instead (parameter ``messaging_limit``).

What counts: a template message the gate accepts, to a valid recipient with no open customer
service window (needs_slot), for a user not counted in the last 24 hours. Counting opens a
24-hour *slot* for the user (the user's head identity key, so linked identities are one user);
more sends to the user inside the slot open none. The rule refuses a send that would open a
slot while the tenant holds ``limit`` open slots, until its oldest slot closes (admit).

It runs after judge(), last in precedence: the count is the tenant's, not one user's, so it is
no predicate of decide() (processors.core.policy.rules.TENANT_RULES). A caller (the offline
check, the live worker's tenant stage) keeps the slots and does::

    limit = effective_limit(policy, learned, known)
    if limit is not None and needs_slot(message, verdict, state, policy, clock):
        admission = admit(user_slot, used, oldest, limit, clock)   # or TenantSlots.admit
        verdict = apply(verdict, admission, message, policy, clock)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Any

from processors.core import outputs
from processors.core.judge import Verdict
from processors.core.policy import state as st
from processors.core.policy.codes import BY_CODE
from processors.core.policy.document import Policy
from processors.core.policy.engine import Decision
from processors.core.policy.state import RecipientState

CODE = "MESSAGING_LIMIT_REACHED"
WINDOW_SECONDS = 86400  # Meta's moving 24 hours: a slot is open this long
UNLIMITED = "unlimited"  # the policy parameter's word for no limit


def effective_limit(policy: Policy, learned: int | None, known: bool) -> int | None:
    """The tenant's limit: the policy's pinned ``messaging_limit`` wins (an int, or
    "unlimited"); else what Meta's webhooks said (learned; None = unlimited) when known.
    None switches the rule off for the tenant: unknown or unlimited."""
    pinned = policy.parameters.messaging_limit
    if pinned == UNLIMITED:
        return None
    if isinstance(pinned, int):
        return pinned
    return learned if known else None


def in_force(policy: Policy, clock: float) -> bool:
    """The rule is enforced or monitored for the tenant at the clock."""
    return policy.rules[CODE].active_at(clock)


def needs_slot(message: dict[str, Any], verdict: Verdict, state: RecipientState,
               policy: Policy, clock: float) -> bool:
    """Whether the send counts against the limit: the rule is in force at the clock, the
    verdict accepted it, it is a template message to a valid recipient, and the user (state:
    all linked identities combined) has no open customer service window at the clock.
    Whether the user already holds a slot is for admit()."""
    if not verdict.decision.accepted or message.get("kind") != "template" \
            or not verdict.enrichment.recipient.valid or not in_force(policy, clock):
        return False
    opened = st.last_inbound(state, clock)
    return opened is None or clock - opened >= policy.parameters.service_window_seconds


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    opens_slot: bool  # the caller records a slot for the user starting at the clock
    retry_after: float | None  # when refused: when the tenant's oldest slot closes


ALREADY_COUNTED = Admission(True, False, None)
NEW_SLOT = Admission(True, True, None)


def admit(user_slot: float | None, used: int, oldest: float | None, limit: int,
          clock: float) -> Admission:
    """One send that needs a slot, against the tenant's slots open at the clock.

    user_slot: the start of the user's slot if still open at the clock; used: the tenant's
    slots open at the clock; oldest: the start of the oldest of them."""
    if user_slot is not None:
        return ALREADY_COUNTED
    if used < limit:
        return NEW_SLOT
    return Admission(False, False, None if oldest is None else oldest + WINDOW_SECONDS)


def apply(verdict: Verdict, admission: Admission, message: dict[str, Any], policy: Policy,
          clock: float) -> Verdict:
    """The final verdict: unchanged when admitted (or the rule is not in force); when refused,
    the rejection judge() would build with this rule first (enforce), or the accepted record
    with the rule in ``policy.monitored`` (monitor)."""
    if admission.admitted or not verdict.decision.accepted or not in_force(policy, clock):
        return verdict
    decision = verdict.decision
    if policy.rules[CODE].mode == "monitor":
        decision = replace(decision, monitored=(*decision.monitored, CODE))
        record = outputs.accepted(message, verdict.enrichment, decision, clock)
    else:
        code = BY_CODE[CODE]
        # An accepted verdict has no violations: this rule is the only one, so it is first.
        decision = Decision(False, code.code, code.meta_error_code, code.reason, code.retryable,
                            admission.retry_after, (CODE,), decision.monitored,
                            decision.policy_id, decision.policy_version)
        record = outputs.rejection(message, verdict.enrichment, decision, clock)
    return replace(verdict, record=record, decision=decision)


class TenantSlots:
    """One tenant's open slots in memory: user key -> slot start, expired lazily.

    A slot counts until WINDOW_SECONDS after its start, at the latest clock seen: in an
    unsorted file a send dated before earlier ones still sees their slots (so the count never
    exceeds the limit in file order), and a slot closed at the latest clock is gone."""

    def __init__(self) -> None:
        self.slots: dict[str, float] = {}
        self._starts: list[tuple[float, str]] = []  # heap; an entry is stale if re-slotted
        self._reached = float("-inf")

    def _expire(self, clock: float) -> None:
        self._reached = max(self._reached, clock)
        starts = self._starts
        while starts and (starts[0][0] + WINDOW_SECONDS <= self._reached
                          or self.slots.get(starts[0][1]) != starts[0][0]):
            start, user = heapq.heappop(starts)
            if self.slots.get(user) == start:
                del self.slots[user]

    def used(self, clock: float) -> int:
        self._expire(clock)
        return len(self.slots)

    def oldest(self, clock: float) -> float | None:
        self._expire(clock)
        return self._starts[0][0] if self._starts else None

    def user_slot(self, user: str, clock: float) -> float | None:
        self._expire(clock)
        return self.slots.get(user)

    def admit(self, user: str, clock: float, limit: int) -> Admission:
        """admit() for one send of the user that needs a slot; records the slot it opens."""
        self._expire(clock)
        admission = admit(self.slots.get(user), len(self.slots),
                          self._starts[0][0] if self._starts else None, limit, clock)
        if admission.opens_slot:
            self.slots[user] = clock
            heapq.heappush(self._starts, (clock, user))
        return admission
