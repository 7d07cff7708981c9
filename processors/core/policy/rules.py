"""The rules, one small predicate each, in precedence order (processors.core.policy.codes). Pure.

A predicate returns None when its rule does not fire, else a Fired with the retry time if the
rule knows one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.core.enrich import BSUID, PARENT_BSUID, Recipient
from processors.core.frozen import quick_init
from processors.core.policy import state as st
from processors.core.policy.codes import RULE_CODES
from processors.core.policy.document import Parameters


@quick_init
@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a rule may look at, gathered before any rule runs."""

    message: dict[str, Any]
    recipient: Recipient
    category: str | None
    template_status: str | None
    state: st.RecipientState
    clock: float


@dataclass(frozen=True, slots=True)
class Fired:
    retry_after: float | None = None


FIRED = Fired()
Predicate = Callable[[Facts, Parameters], Fired | None]


def _marketing(facts: Facts) -> bool:
    return facts.category == "MARKETING"


def invalid_recipient(facts: Facts, _: Parameters) -> Fired | None:
    return None if facts.recipient.valid else FIRED


def region_unsupported(facts: Facts, params: Parameters) -> Fired | None:
    return FIRED if facts.recipient.region in params.unsupported_regions else None


def bsuid_unsupported(facts: Facts, _: Parameters) -> Fired | None:
    # Meta 131062: authentication templates (their OTP buttons) still need a phone number.
    if facts.category == "AUTHENTICATION" and facts.recipient.valid \
            and facts.recipient.kind in (BSUID, PARENT_BSUID):
        return FIRED
    return None


def template_disabled(facts: Facts, _: Parameters) -> Fired | None:
    return FIRED if facts.template_status == "DISABLED" else None


def template_paused(facts: Facts, _: Parameters) -> Fired | None:
    return FIRED if facts.template_status == "PAUSED" else None


def template_not_approved(facts: Facts, _: Parameters) -> Fired | None:
    return FIRED if facts.template_status in {"PENDING", "REJECTED", "DELETED"} else None


def template_archived(facts: Facts, _: Parameters) -> Fired | None:
    return FIRED if facts.template_status == "ARCHIVED" else None


def _window_open(facts: Facts, params: Parameters) -> bool:
    """The user's customer service window is open at the clock (an inbound message or call
    in the last service_window_seconds)."""
    opened = st.last_inbound(facts.state, facts.clock)
    return opened is not None and facts.clock - opened < params.service_window_seconds


def outside_service_window(facts: Facts, params: Parameters) -> Fired | None:
    if facts.message.get("kind") != "free_form" or not facts.recipient.valid:
        return None
    return None if _window_open(facts, params) else FIRED


def bulk_marketing(facts: Facts, params: Parameters) -> Fired | None:
    origin = facts.message.get("origin") or "api"
    return FIRED if _marketing(facts) and origin in params.bulk_origins else None


def marketing_opted_out(facts: Facts, _: Parameters) -> Fired | None:
    if not _marketing(facts) or not facts.recipient.valid:
        return None
    return FIRED if st.preference_at(facts.state, facts.clock) == "stop" else None


def marketing_paused_region(facts: Facts, params: Parameters) -> Fired | None:
    # The rule's effective window (from 2025-04-01) is checked by the engine, at send time.
    if _marketing(facts) and facts.recipient.region in params.paused_regions:
        return FIRED
    return None


def marketing_experiment(facts: Facts, params: Parameters) -> Fired | None:
    # Meta's 130472: resending marketing to a user in its experiment fails the same way, for
    # as long as Meta keeps them in it (it names no end: the hold is the policy's).
    if not _marketing(facts) or not facts.recipient.valid:
        return None
    held = st.experiment_hold(facts.state, facts.clock)
    if held is not None and facts.clock - held < params.marketing_experiment_hold_seconds:
        return FIRED
    return None


def marketing_limit(facts: Facts, params: Parameters) -> Fired | None:
    if not _marketing(facts) or not facts.recipient.valid:
        return None
    hit = st.last_limit_hit(facts.state, facts.clock)
    if hit is None or facts.clock - hit >= params.marketing_cooldown_seconds:
        return None
    # Meta's per-user marketing limits page: marketing messages sent while the user's
    # customer service window is open do not count towards the limit.
    if _window_open(facts, params):
        return None
    return Fired(retry_after=hit + params.marketing_cooldown_seconds)


def pair_rate(facts: Facts, params: Parameters) -> Fired | None:
    if not facts.recipient.valid:
        return None
    retry = st.pair_retry(facts.state, facts.message.get("business_number") or "", facts.clock,
                          params.pair_rate_burst, params.pair_rate_interval_seconds)
    return None if retry is None else Fired(retry_after=retry)


RULES: tuple[tuple[str, Predicate], ...] = (
    ("INVALID_RECIPIENT", invalid_recipient),
    ("RECIPIENT_REGION_UNSUPPORTED", region_unsupported),
    ("BSUID_RECIPIENT_UNSUPPORTED", bsuid_unsupported),
    ("TEMPLATE_DISABLED", template_disabled),
    ("TEMPLATE_PAUSED", template_paused),
    ("TEMPLATE_NOT_APPROVED", template_not_approved),
    ("TEMPLATE_ARCHIVED", template_archived),
    ("OUTSIDE_SERVICE_WINDOW", outside_service_window),
    ("BULK_MARKETING_NOT_ALLOWED", bulk_marketing),
    ("MARKETING_OPTED_OUT", marketing_opted_out),
    ("MARKETING_PAUSED_US", marketing_paused_region),
    ("USER_IN_MARKETING_EXPERIMENT", marketing_experiment),
    ("USER_MARKETING_TEMPLATE_LIMIT", marketing_limit),
    ("PAIR_RATE_LIMITED", pair_rate),
)
# Rules decided after judge(), last in precedence: they need state of the whole tenant, not of
# one user, so they have no predicate here and decide() never sees them; the policy still
# names them (mode, from, until) like any rule. processors.core.policy.messaging_limit.
TENANT_RULES: tuple[str, ...] = ("MESSAGING_LIMIT_REACHED",)
assert tuple(code for code, _ in RULES) + TENANT_RULES == RULE_CODES, \
    "rules and codes out of order"
