"""Rule MESSAGING_LIMIT_REACHED, the pure part: the limit in force, what needs a slot, admission
and the final verdict, and the in-memory slots of one tenant."""

from __future__ import annotations

from typing import Any

import pytest

from processors.core import contracts
from processors.core.judge import Verdict, judge
from processors.core.policy import EMPTY, Policy, load_policy
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st
from processors.core.policy.state import RecipientState
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from tests.factories import NOW, inbound, message, template_entry
from tests.factories import policy_with as policies

POLICY = load_policy()
CLOCK = parse_rfc3339(NOW)
CA = "+14165550123"
UTILITY = template_entry("promo", "UTILITY")
DAY = ml.WINDOW_SECONDS



def base(**changes: Any) -> Policy:
    return policies(**changes).base


def verdict_of(doc: dict[str, Any], state: RecipientState = EMPTY, policy: Policy = POLICY.base,
               entry: dict[str, Any] | None = UTILITY, clock: float = CLOCK) -> Verdict:
    return judge(doc, state, entry, policy, clock)


# --- the limit in force ----------------------------------------------------------------------


@pytest.mark.parametrize(("pinned", "learned", "known", "limit"), [
    (None, 250, True, 250),  # learned from Meta's webhooks
    (None, None, True, None),  # Meta said unlimited: off
    (None, None, False, None),  # never heard: off
    # never heard, whatever value is passed beside it (with learned=None alone the case above
    # passes whether `known` is looked at or not)
    (None, 250, False, None),
    (1000, 250, True, 1000),  # the policy's pin wins over the webhook
    (1000, None, False, 1000),
    ("unlimited", 250, True, None),  # pinned unlimited: off whatever Meta said
])
def test_effective_limit(pinned: int | str | None, learned: int | None, known: bool,
                         limit: int | None) -> None:
    assert ml.effective_limit(base(parameters__messaging_limit=pinned), learned, known) == limit


def test_the_default_policy_learns_the_limit() -> None:
    assert POLICY.base.parameters.messaging_limit is None
    setting = POLICY.base.rules[ml.CODE]
    assert (setting.mode, setting.start) == ("enforce", parse_rfc3339("2025-10-07T00:00:00Z"))


def test_a_tenant_pins_its_own_limit() -> None:
    pinned = policies(tenants={"pilot": {"parameters": {"messaging_limit": 10}}})
    assert ml.effective_limit(pinned.for_tenant("pilot"), 250, True) == 10
    assert ml.effective_limit(pinned.for_tenant("acme"), 250, True) == 250


@pytest.mark.parametrize("value", [0, -1, "lots", 2.5, True])
def test_the_pin_is_checked(value: Any) -> None:
    with pytest.raises(ValueError, match="messaging_limit"):
        base(parameters__messaging_limit=value)


# --- what needs a slot -----------------------------------------------------------------------


def test_an_accepted_template_without_a_window_needs_a_slot() -> None:
    doc = message(recipient=CA)
    assert ml.needs_slot(doc, verdict_of(doc), EMPTY, POLICY.base, CLOCK)


def test_an_open_service_window_needs_no_slot() -> None:
    doc = message(recipient=CA)
    state = st.apply_inbound(EMPTY, inbound(CA, "2026-11-25T12:00:01Z"))  # 23:59:59 before
    assert not ml.needs_slot(doc, verdict_of(doc, state), state, POLICY.base, CLOCK)
    closed = st.apply_inbound(EMPTY, inbound(CA, "2026-11-25T12:00:00Z"))  # 24 h before
    assert ml.needs_slot(doc, verdict_of(doc, closed), closed, POLICY.base, CLOCK)
    later = st.apply_inbound(EMPTY, inbound(CA, "2026-11-26T12:00:01Z"))  # after the clock
    assert ml.needs_slot(doc, verdict_of(doc, later), later, POLICY.base, CLOCK)


def test_free_form_rejected_and_invalid_need_no_slot() -> None:
    state = st.apply_inbound(EMPTY, inbound(CA, "2026-11-26T11:00:00Z"))
    free = message(recipient=CA, kind="free_form", template=None)
    assert verdict_of(free, state, entry=None).decision.accepted
    assert not ml.needs_slot(free, verdict_of(free, state, entry=None), EMPTY, POLICY.base,
                             CLOCK)
    paused = message(recipient=CA)
    rejected = verdict_of(paused, entry=template_entry("promo", "UTILITY", "PAUSED"))
    assert not ml.needs_slot(paused, rejected, EMPTY, POLICY.base, CLOCK)
    invalid = message(recipient="+1202555")
    assert not ml.needs_slot(invalid, verdict_of(invalid), EMPTY, POLICY.base, CLOCK)


def test_the_rule_off_or_not_yet_in_force_needs_no_slot() -> None:
    doc = message(recipient=CA)
    off = base(rules__MESSAGING_LIMIT_REACHED__mode="off")
    assert not ml.needs_slot(doc, verdict_of(doc, policy=off), EMPTY, off, CLOCK)
    before = parse_rfc3339("2025-10-06T23:59:59Z")
    assert not ml.needs_slot(doc, verdict_of(doc, clock=before), EMPTY, POLICY.base, before)
    monitor = base(rules__MESSAGING_LIMIT_REACHED__mode="monitor")
    assert ml.needs_slot(doc, verdict_of(doc, policy=monitor), EMPTY, monitor, CLOCK)


# --- admission -------------------------------------------------------------------------------


def test_admit() -> None:
    assert ml.admit(CLOCK - 60, 250, CLOCK - 3600, 250, CLOCK) == ml.Admission(True, False, None)
    assert ml.admit(None, 249, CLOCK - 3600, 250, CLOCK) == ml.Admission(True, True, None)
    assert ml.admit(None, 250, CLOCK - 3600, 250, CLOCK) == \
        ml.Admission(False, False, CLOCK - 3600 + DAY)
    assert ml.admit(None, 0, None, 1, CLOCK) == ml.Admission(True, True, None)


# --- the final verdict -----------------------------------------------------------------------


REFUSED = ml.Admission(False, False, CLOCK + 3600)


def test_admitted_verdict_is_unchanged() -> None:
    doc = message(recipient=CA)
    verdict = verdict_of(doc)
    for admission in (ml.Admission(True, True, None), ml.Admission(True, False, None)):
        assert ml.apply(verdict, admission, doc, POLICY.base, CLOCK) is verdict


def test_refused_when_enforced_is_the_rejection_judge_would_build() -> None:
    doc = message(recipient=CA)
    final = ml.apply(verdict_of(doc), REFUSED, doc, POLICY.base, CLOCK)
    decision = final.decision
    assert (decision.accepted, decision.error_code, decision.meta_error_code,
            decision.retryable, decision.retry_after, decision.violations) == (
        False, ml.CODE, None, True, CLOCK + 3600, (ml.CODE,))
    assert decision.reason is not None and "messaging limit" in decision.reason
    record = final.record
    assert contracts.first_error("rejection", record) is None
    assert (record["error_code"], record["retry_after"], record["violations"],
            record["billable"], record["message"]) == (
        ml.CODE, format_rfc3339(CLOCK + 3600), [ml.CODE], False, doc)
    assert (record["decided_at"], final.key) == (format_rfc3339(CLOCK), f"acme:{CA}")


def test_refused_in_monitor_mode_is_accepted_and_monitored() -> None:
    monitor = base(rules__MESSAGING_LIMIT_REACHED__mode="monitor",
                   rules__PAIR_RATE_LIMITED__mode="monitor")
    doc = message(recipient=CA)
    state = EMPTY
    for _ in range(45):  # the pair rate rule fires too, in monitor mode
        state = st.with_send(state, "", CLOCK, 6.0)
    verdict = verdict_of(doc, state, monitor)
    assert verdict.decision.monitored == ("PAIR_RATE_LIMITED",)
    final = ml.apply(verdict, REFUSED, doc, monitor, CLOCK)
    assert final.decision.accepted and final.decision.violations == ()
    assert final.decision.monitored == ("PAIR_RATE_LIMITED", ml.CODE)
    assert contracts.first_error("accepted_message", final.record) is None
    assert final.record["policy"]["monitored"] == ["PAIR_RATE_LIMITED", ml.CODE]


def test_refusal_changes_nothing_when_the_rule_is_off_or_already_rejected() -> None:
    doc = message(recipient=CA)
    off = base(rules__MESSAGING_LIMIT_REACHED__mode="off")
    verdict = verdict_of(doc, policy=off)
    assert ml.apply(verdict, REFUSED, doc, off, CLOCK) is verdict
    rejected = verdict_of(doc, entry=template_entry("promo", "UTILITY", "DISABLED"))
    assert ml.apply(rejected, REFUSED, doc, POLICY.base, CLOCK) is rejected


# --- one tenant's slots in memory ------------------------------------------------------------


def test_tenant_slots_count_new_users_in_24_hours() -> None:
    slots = ml.TenantSlots()
    assert slots.admit("acme:+1", CLOCK, 2) == ml.Admission(True, True, None)
    assert slots.admit("acme:+2", CLOCK + 60, 2) == ml.Admission(True, True, None)
    assert slots.admit("acme:+1", CLOCK + 120, 2) == ml.Admission(True, False, None)
    assert slots.admit("acme:+3", CLOCK + 180, 2) == ml.Admission(False, False, CLOCK + DAY)
    assert (slots.used(CLOCK + 180), slots.oldest(CLOCK + 180)) == (2, CLOCK)
    assert slots.user_slot("acme:+1", CLOCK + 180) == CLOCK  # the second send opened none
    # The first slot closes 24 hours after it opened: one new user fits again.
    assert slots.admit("acme:+3", CLOCK + DAY, 2) == ml.Admission(True, True, None)
    assert slots.admit("acme:+1", CLOCK + DAY, 2) == \
        ml.Admission(False, False, CLOCK + 60 + DAY)  # user 1 is a new user again
    assert (slots.used(CLOCK + DAY), slots.oldest(CLOCK + DAY)) == (2, CLOCK + 60)
    assert slots.used(CLOCK + 3 * DAY) == 0 and slots.oldest(CLOCK + 3 * DAY) is None
    assert slots.user_slot("acme:+3", CLOCK + 3 * DAY) is None


def test_tenant_slots_a_lower_limit_refuses_until_enough_close() -> None:
    slots = ml.TenantSlots()
    for n in range(5):
        assert slots.admit(f"acme:+{n}", CLOCK + n, 10).opens_slot
    # Meta lowered the limit to 3 with five slots open: no new user until fewer than three
    # are open.
    assert slots.admit("acme:+9", CLOCK + 10, 3) == ml.Admission(False, False, CLOCK + DAY)
    assert not slots.admit("acme:+9", CLOCK + DAY + 1, 3).admitted  # three still open
    assert slots.admit("acme:+9", CLOCK + DAY + 2, 3).admitted
