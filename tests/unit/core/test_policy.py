"""Every rule, the precedence, the clock, monitor mode and per-tenant overrides: no broker."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from processors.core.policy import (
    EMPTY,
    Decision,
    PolicyError,
    PolicySet,
    RecipientState,
    decide,
    enrich,
    load_policy,
    message_clock,
    parse_policy,
)
from processors.core.policy import state as st
from processors.core.policy.codes import RULE_CODES
from processors.core.policy.engine import rules_in_force
from processors.core.policy.rules import RULES, TENANT_RULES
from processors.core.timeutil import parse_rfc3339
from tests.factories import NOW, inbound, message, preference, status, template_entry
from tests.factories import policy_document as document

POLICY = load_policy()
US = "+12025550143"
CA = "+14165550123"
BR = "+5511912345678"


def run(doc: dict[str, Any], entry: dict[str, Any] | None = None,
        state: RecipientState = EMPTY, policies: PolicySet = POLICY,
        clock: str | None = None) -> Decision:
    at = parse_rfc3339(clock) if clock else message_clock(doc)
    return decide(doc, enrich(doc, entry), state, entry, policies.for_tenant(doc["tenant_id"]), at)



# --- each rule -----------------------------------------------------------------------------


def test_valid_canadian_marketing_is_accepted() -> None:
    decision = run(message(recipient=CA))
    assert decision.accepted and decision.error_code is None and decision.violations == ()


def test_invalid_recipient() -> None:
    decision = run(message(recipient="+1202555"))
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("INVALID_RECIPIENT", None, False)


@pytest.mark.parametrize("recipient", ["+5352345678", "+989123456789", "+963944567890",
                                       "+85021234567"])
def test_region_unsupported(recipient: str) -> None:
    decision = run(message(recipient=recipient, kind="free_form", template=None),
                   state=st.with_inbound(EMPTY, parse_rfc3339(NOW) - 60))
    assert decision.error_code == "RECIPIENT_REGION_UNSUPPORTED"


@pytest.mark.parametrize(("template_status", "code", "meta", "retryable"), [
    ("DISABLED", "TEMPLATE_DISABLED", 132016, False),
    ("PAUSED", "TEMPLATE_PAUSED", 132015, True),
    ("PENDING", "TEMPLATE_NOT_APPROVED", 132001, False),
    ("REJECTED", "TEMPLATE_NOT_APPROVED", 132001, False),
    ("DELETED", "TEMPLATE_NOT_APPROVED", 132001, False),
    ("ARCHIVED", "TEMPLATE_ARCHIVED", None, False),
])
def test_template_status(template_status: str, code: str, meta: int, retryable: bool) -> None:
    decision = run(message(recipient=CA), template_entry(category="UTILITY",
                                                         status=template_status))
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        (code, meta, retryable)


def test_approved_template_passes() -> None:
    assert run(message(recipient=CA), template_entry(status="APPROVED")).accepted


def test_free_form_outside_service_window() -> None:
    decision = run(message(recipient=CA, kind="free_form", template=None))
    assert (decision.error_code, decision.meta_error_code) == ("OUTSIDE_SERVICE_WINDOW", 131047)


def test_free_form_inside_service_window() -> None:
    state = st.apply_inbound(EMPTY, inbound(CA, "2026-11-25T12:00:01Z"))  # 23h59m59s before
    assert run(message(recipient=CA, kind="free_form", template=None), state=state).accepted


def test_service_window_closes_after_24_hours() -> None:
    state = st.apply_inbound(EMPTY, inbound(CA, "2026-11-25T12:00:00Z"))  # exactly 24 h before
    decision = run(message(recipient=CA, kind="free_form", template=None), state=state)
    assert decision.error_code == "OUTSIDE_SERVICE_WINDOW"


def test_inbound_after_the_clock_does_not_open_the_window() -> None:
    state = st.apply_inbound(EMPTY, inbound(CA, "2026-11-26T12:00:01Z"))
    decision = run(message(recipient=CA, kind="free_form", template=None), state=state)
    assert decision.error_code == "OUTSIDE_SERVICE_WINDOW"


def test_window_rule_ignores_templates() -> None:
    assert run(message(recipient=CA), template_entry(category="UTILITY")).accepted


@pytest.mark.parametrize("origin", ["bulk", "mass_action"])
def test_bulk_marketing_not_allowed(origin: str) -> None:
    decision = run(message(recipient=CA, origin=origin))
    assert (decision.error_code, decision.meta_error_code) == ("BULK_MARKETING_NOT_ALLOWED", None)


@pytest.mark.parametrize("origin", ["agent", "automation", "api"])
def test_non_bulk_marketing_allowed(origin: str) -> None:
    assert run(message(recipient=CA, origin=origin)).accepted


def test_marketing_without_an_origin_is_not_bulk() -> None:
    # origin is optional: a message without one came through the API, not a bulk tool.
    doc = message(recipient=CA, origin=None)
    assert "origin" not in doc
    assert run(doc).accepted
    assert run({**doc, "origin": "bulk"}).error_code == "BULK_MARKETING_NOT_ALLOWED"


def test_free_form_is_not_judged_by_a_template_status() -> None:
    # A free-form message has no template: a catalog entry handed to decide() alongside it
    # (e.g. one left over from the message before) must not reject it.
    doc = message(recipient=CA, kind="free_form", template=None)
    state = st.with_inbound(EMPTY, parse_rfc3339(NOW) - 60)
    for template_status in ("DISABLED", "PAUSED", "REJECTED", "ARCHIVED"):
        entry = template_entry(category="UTILITY", status=template_status)
        decision = decide(doc, enrich(doc, None), state, entry, POLICY.base, parse_rfc3339(NOW))
        assert decision.accepted and decision.violations == (), template_status


def test_bulk_utility_allowed() -> None:
    assert run(message(recipient=CA, origin="bulk"), template_entry(category="UTILITY")).accepted


def test_opted_out() -> None:
    state = st.apply_preference(EMPTY, preference(CA, "stop", "2026-11-20T00:00:00Z"))
    decision = run(message(recipient=CA), state=state)
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("MARKETING_OPTED_OUT", 131050, False)


def test_resume_lifts_opt_out() -> None:
    state = st.apply_preference(EMPTY, preference(CA, "stop", "2026-11-20T00:00:00Z"))
    state = st.apply_preference(state, preference(CA, "resume", "2026-11-21T00:00:00Z"))
    assert run(message(recipient=CA), state=state).accepted


def test_latest_preference_wins_whatever_the_arrival_order() -> None:
    state = st.apply_preference(EMPTY, preference(CA, "resume", "2026-11-21T00:00:00Z"))
    state = st.apply_preference(state, preference(CA, "stop", "2026-11-20T00:00:00Z"))
    assert run(message(recipient=CA), state=state).accepted


def test_status_131050_counts_as_stop() -> None:
    state = st.apply_status(EMPTY, status(CA, 131050, "2026-11-20T00:00:00Z"))
    assert run(message(recipient=CA), state=state).error_code == "MARKETING_OPTED_OUT"


def test_opt_out_does_not_stop_utility() -> None:
    state = st.apply_preference(EMPTY, preference(CA, "stop", "2026-11-20T00:00:00Z"))
    assert run(message(recipient=CA), template_entry(category="UTILITY"), state=state).accepted


def test_us_marketing_paused() -> None:
    decision = run(message(recipient=US))
    assert (decision.error_code, decision.meta_error_code, decision.retryable,
            decision.retry_after) == ("MARKETING_PAUSED_US", 131049, False, None)


@pytest.mark.parametrize("category", ["UTILITY", "AUTHENTICATION"])
def test_us_utility_and_authentication_delivered(category: str) -> None:
    assert run(message(recipient=US), template_entry(category=category)).accepted


@pytest.mark.parametrize("recipient", [CA, "+12423571234", "+17875550123", "+13405550123",
                                       "+16715550123", "+16847331234", "+16705550123"])
def test_other_plus_one_regions_not_paused_by_default(recipient: str) -> None:
    assert run(message(recipient=recipient)).accepted


def test_us_territories_paused_when_switched_on() -> None:
    policies = parse_policy(document(parameters__pause_us_territories=True))
    for recipient in ["+17875550123", "+13405550123", "+16715550123", "+16847331234",
                      "+16705550123"]:
        assert run(message(recipient=recipient), policies=policies).error_code == \
            "MARKETING_PAUSED_US"
    assert run(message(recipient=CA), policies=policies).accepted


def test_us_toll_free_marketing_paused() -> None:
    assert run(message(recipient="+18005550199")).error_code == "MARKETING_PAUSED_US"


def test_user_marketing_limit_with_retry_after() -> None:
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T02:00:00Z"))
    decision = run(message(recipient=BR), state=state)
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("USER_MARKETING_TEMPLATE_LIMIT", 131049, True)
    assert decision.retry_after == parse_rfc3339("2026-11-27T02:00:00Z")


def test_user_marketing_limit_expires_after_cooldown() -> None:
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-25T12:00:00Z"))
    assert run(message(recipient=BR), state=state).accepted


def test_user_marketing_limit_cooldown_is_configurable() -> None:
    policies = parse_policy(document(parameters__marketing_cooldown_seconds=3600))
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T10:30:00Z"))
    assert run(message(recipient=BR), state=state, policies=policies).accepted
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T11:30:00Z"))
    decision = run(message(recipient=BR), state=state, policies=policies)
    assert decision.retry_after == parse_rfc3339("2026-11-26T12:30:00Z")


def test_open_service_window_lifts_the_marketing_cooldown() -> None:
    # Meta: marketing sent while the user's customer service window is open does not count
    # towards the per-user limit, so a 131049 cool-down does not hold it back.
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T10:00:00Z"))
    state = st.apply_inbound(state, inbound(BR, "2026-11-26T11:00:00Z"))
    decision = run(message(recipient=BR), state=state)
    assert decision.accepted and decision.violations == ()


def test_cooldown_holds_only_marketing() -> None:
    # 131049 is Meta's per-user *marketing* limit: utility and authentication templates to
    # the same user still go during the cool-down.
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T11:00:00Z"))
    assert run(message(recipient=BR), state=state).error_code == "USER_MARKETING_TEMPLATE_LIMIT"
    for category in ("UTILITY", "AUTHENTICATION"):
        decision = run(message(recipient=BR), template_entry(category=category), state=state)
        assert decision.accepted and decision.violations == (), category


def test_cooldown_returns_once_the_window_closes() -> None:
    state = st.apply_status(EMPTY, status(BR, 131049, "2026-11-26T10:00:00Z"))
    state = st.apply_inbound(state, inbound(BR, "2026-11-25T11:00:00Z"))  # window closed at 11:00
    decision = run(message(recipient=BR), state=state)
    assert decision.error_code == "USER_MARKETING_TEMPLATE_LIMIT"
    assert decision.retry_after == parse_rfc3339("2026-11-27T10:00:00Z")


def test_open_window_lifts_only_the_cooldown() -> None:
    state = st.apply_status(EMPTY, status(US, 131049, "2026-11-26T10:00:00Z"))
    state = st.apply_preference(state, preference(US, "stop", "2026-11-20T00:00:00Z"))
    state = st.apply_inbound(state, inbound(US, "2026-11-26T11:00:00Z"))
    decision = run(message(recipient=US), template_entry(status="PAUSED"), state=state)
    assert decision.violations == ("TEMPLATE_PAUSED", "MARKETING_OPTED_OUT",
                                   "MARKETING_PAUSED_US")


def _experiment(at: str = "2026-11-20T12:00:00Z") -> RecipientState:
    return st.apply_status(EMPTY, status(BR, 130472, at))


def test_130472_holds_marketing_back() -> None:
    decision = run(message(recipient=BR), state=_experiment())
    assert (decision.error_code, decision.meta_error_code, decision.retryable,
            decision.retry_after) == ("USER_IN_MARKETING_EXPERIMENT", 130472, False, None)


def test_130472_holds_only_marketing() -> None:
    utility = message(recipient=BR, template={"name": "notice", "language": "en_US"})
    assert run(utility, template_entry("notice", "UTILITY"), state=_experiment()).accepted
    free_form = message(recipient=BR, kind="free_form", template=None)
    state = st.apply_inbound(_experiment(), inbound(BR, "2026-11-26T11:00:00Z"))
    assert run(free_form, state=state).accepted


def test_130472_hold_lasts_the_policy_parameter() -> None:
    assert run(message(recipient=BR), state=_experiment("2026-10-28T12:00:01Z")).error_code \
        == "USER_IN_MARKETING_EXPERIMENT"  # 30 days less a second
    assert run(message(recipient=BR), state=_experiment("2026-10-27T12:00:00Z")).accepted
    policies = parse_policy(document(parameters__marketing_experiment_hold_seconds=86400))
    assert run(message(recipient=BR), state=_experiment(), policies=policies).accepted


def test_delivered_marketing_ends_the_hold() -> None:
    delivered = {**status(BR, None, "2026-11-25T12:00:00Z", state="delivered"),
                 "category": "MARKETING"}
    assert run(message(recipient=BR), state=st.apply_status(_experiment(), delivered)).accepted
    # a delivered utility message, or one before the 130472, ends nothing
    utility = {**delivered, "category": "UTILITY"}
    before = {**delivered, "timestamp": "2026-11-19T12:00:00Z"}
    for other in (utility, before):
        assert run(message(recipient=BR), state=st.apply_status(_experiment(), other)) \
            .error_code == "USER_IN_MARKETING_EXPERIMENT"


@pytest.mark.parametrize(("outcome", "code"), [("sent", None), ("failed", 131026)])
def test_only_a_delivered_or_read_marketing_message_ends_the_hold(outcome: str,
                                                                  code: int | None) -> None:
    # Sent is not delivered, and a marketing message that failed (for another reason than
    # 130472) was not delivered either: the user may still be in the experiment.
    other = {**status(BR, code, "2026-11-25T12:00:00Z", state=outcome), "category": "MARKETING"}
    assert run(message(recipient=BR), state=st.apply_status(_experiment(), other)) \
        .error_code == "USER_IN_MARKETING_EXPERIMENT"
    read = {**status(BR, None, "2026-11-25T12:00:00Z", state="read"), "category": "MARKETING"}
    assert run(message(recipient=BR), state=st.apply_status(_experiment(), read)).accepted


def test_experiment_state_is_pruned_and_kept_in_the_store_value() -> None:
    keep = st.Retention(86400, 86400, 600, experiment_hold_seconds=86400)
    held = _experiment("2026-11-26T00:00:00Z")
    now = parse_rfc3339(NOW)
    assert st.prune(held, now, keep) is held
    assert st.prune(held, now + 86400, keep).is_empty()
    assert st.from_json(orjson.loads(st.to_bytes(held))) == held
    assert st.from_json(st.to_json(held)) == held
    ended = st.apply_status(held, {**status(BR, None, "2026-11-26T06:00:00Z",
                                            state="read"), "category": "MARKETING"})
    # the end outranks a 130472 stamped before it that arrives late, for as long as a hold
    assert st.prune(ended, now, keep).experiment == ((parse_rfc3339("2026-11-26T06:00:00Z"),
                                                      st.RELEASED),)
    late = st.apply_status(st.prune(ended, now, keep), status(BR, 130472, "2026-11-26T03:00:00Z"))
    assert run(message(recipient=BR), state=late).accepted
    assert st.prune(ended, now + 86400, keep).is_empty()


def test_other_status_codes_start_no_cooldown() -> None:
    state = st.apply_status(EMPTY, status(BR, 131026, "2026-11-26T11:00:00Z"))
    state = st.apply_status(state, status(BR, None, "2026-11-26T11:00:00Z", state="delivered"))
    assert state.is_empty()
    assert run(message(recipient=BR), state=state).accepted


BSUID = "US.13491208655302741918"
CA_BSUID = "CA.13491208655302741918"
CA_PARENT = "CA.ENT.11815799212886844830"


@pytest.mark.parametrize("recipient", [CA_BSUID, CA_PARENT])
def test_authentication_template_to_a_bsuid(recipient: str) -> None:
    decision = run(message(recipient=recipient), template_entry(category="AUTHENTICATION"))
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("BSUID_RECIPIENT_UNSUPPORTED", 131062, False)


def test_declared_authentication_template_to_a_bsuid() -> None:
    doc = message(recipient=CA_BSUID, template={"name": "otp", "language": "en_US",
                                                "category": "AUTHENTICATION"})
    assert run(doc).error_code == "BSUID_RECIPIENT_UNSUPPORTED"


@pytest.mark.parametrize(("recipient", "category"), [
    (CA, "AUTHENTICATION"), (CA_BSUID, "UTILITY"), (CA_PARENT, "MARKETING"),
    (BSUID, "UTILITY")])
def test_other_sends_to_bsuids_and_numbers_pass(recipient: str, category: str) -> None:
    assert run(message(recipient=recipient), template_entry(category=category)).accepted


def test_free_form_to_a_bsuid_needs_its_window() -> None:
    doc = message(recipient=CA_BSUID, kind="free_form", template=None)
    assert run(doc).error_code == "OUTSIDE_SERVICE_WINDOW"
    state = st.apply_inbound(EMPTY, inbound(CA_BSUID, "2026-11-26T11:00:00Z"))
    assert run(doc, state=state).accepted


def _sent(count: int, at: str = NOW, business_number: str = "",
          interval: float = 6.0) -> RecipientState:
    """The state after `count` accepted sends at `at` (each takes one interval of the budget)."""
    state = EMPTY
    for _ in range(count):
        state = st.with_send(state, business_number, parse_rfc3339(at), interval)
    return state


def test_pair_rate_limited() -> None:
    utility = template_entry(category="UTILITY")
    assert run(message(recipient=CA), utility, state=_sent(44)).accepted
    decision = run(message(recipient=CA), utility, state=_sent(45), clock="2026-11-26T12:00:01Z")
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("PAIR_RATE_LIMITED", 131056, True)
    assert decision.retry_after == parse_rfc3339("2026-11-26T12:00:06Z")
    assert run(message(recipient=CA), utility, state=_sent(45), clock="2026-11-26T12:00:06Z") \
        .accepted


def test_pair_rate_is_per_business_number() -> None:
    utility = template_entry(category="UTILITY")
    state = _sent(45, business_number="+15550783881")
    assert run(message(recipient=CA, business_number="+15550783881"), utility,
               state=state).error_code == "PAIR_RATE_LIMITED"
    assert run(message(recipient=CA, business_number="+15550783882"), utility,
               state=state).accepted
    assert run(message(recipient=CA), utility, state=state).accepted  # no number: its own


def test_pair_rate_figures_per_tenant() -> None:
    policies = parse_policy(document(tenants={"slow": {"parameters": {
        "pair_rate_burst": 1, "pair_rate_interval_seconds": 60}}}))
    utility = template_entry(category="UTILITY")
    state = _sent(1, interval=60)
    decision = run(message(recipient=CA, tenant_id="slow"), utility, state=state,
                   policies=policies, clock="2026-11-26T12:00:30Z")
    assert decision.error_code == "PAIR_RATE_LIMITED"
    assert decision.retry_after == parse_rfc3339("2026-11-26T12:01:00Z")
    assert run(message(recipient=CA), utility, state=state, policies=policies).accepted


def test_pair_rate_monitor_mode() -> None:
    policies = parse_policy(document(rules__PAIR_RATE_LIMITED__mode="monitor"))
    decision = run(message(recipient=CA), template_entry(category="UTILITY"), state=_sent(45),
                   policies=policies)
    assert decision.accepted and decision.monitored == ("PAIR_RATE_LIMITED",)
    assert decision.violations == ()


# --- precedence ----------------------------------------------------------------------------


def test_bsuid_rule_after_region_and_before_template_status() -> None:
    decision = run(message(recipient="CU.1"), template_entry(category="AUTHENTICATION",
                                                             status="DISABLED"))
    assert decision.violations == ("RECIPIENT_REGION_UNSUPPORTED", "BSUID_RECIPIENT_UNSUPPORTED",
                                   "TEMPLATE_DISABLED")


def test_archived_template_after_the_bsuid_rule_and_before_marketing_rules() -> None:
    state = st.apply_preference(EMPTY, preference(BSUID, "stop", "2026-11-20T00:00:00Z"))
    decision = run(message(recipient=BSUID, origin="bulk"),
                   template_entry(category="MARKETING", status="ARCHIVED"), state=state)
    assert decision.violations == ("TEMPLATE_ARCHIVED", "BULK_MARKETING_NOT_ALLOWED",
                                   "MARKETING_OPTED_OUT", "MARKETING_PAUSED_US")
    assert (decision.error_code, decision.retryable) == ("TEMPLATE_ARCHIVED", False)


def test_pair_rate_is_last_and_its_retry_after_only_when_it_is_first() -> None:
    state = st.apply_status(_sent(45), status(BR, 131049, "2026-11-26T11:00:00Z"))
    decision = run(message(recipient=BR), state=state)
    assert decision.violations == ("USER_MARKETING_TEMPLATE_LIMIT", "PAIR_RATE_LIMITED")
    assert decision.retry_after == parse_rfc3339("2026-11-27T11:00:00Z")  # the first rule's




def test_every_fired_rule_is_listed_in_precedence_order() -> None:
    state = st.apply_preference(EMPTY, preference(US, "stop", "2026-11-20T00:00:00Z"))
    state = st.apply_status(state, status(US, 131049, "2026-11-26T11:00:00Z"))
    decision = run(message(recipient=US, origin="bulk"), template_entry(status="PAUSED"),
                   state=state)
    assert decision.violations == ("TEMPLATE_PAUSED", "BULK_MARKETING_NOT_ALLOWED",
                                   "MARKETING_OPTED_OUT", "MARKETING_PAUSED_US",
                                   "USER_MARKETING_TEMPLATE_LIMIT")
    assert decision.error_code == "TEMPLATE_PAUSED"
    assert decision.retryable is True
    # retry_after belongs to the first rule, which knows none.
    assert decision.retry_after is None


def test_invalid_number_first_then_template_rules() -> None:
    decision = run(message(recipient="+1202555"), template_entry(status="DISABLED"))
    assert decision.violations == ("INVALID_RECIPIENT", "TEMPLATE_DISABLED")


def test_unsupported_region_before_template_status() -> None:
    decision = run(message(recipient="+5352345678"), template_entry(status="DISABLED"))
    assert decision.violations[:2] == ("RECIPIENT_REGION_UNSUPPORTED", "TEMPLATE_DISABLED")


def test_template_rule_before_us_pause() -> None:
    assert run(message(recipient=US), template_entry(status="DISABLED")).violations == \
        ("TEMPLATE_DISABLED", "MARKETING_PAUSED_US")


def test_codes_follow_design_order() -> None:
    assert RULE_CODES == (
        "INVALID_RECIPIENT", "RECIPIENT_REGION_UNSUPPORTED", "BSUID_RECIPIENT_UNSUPPORTED",
        "TEMPLATE_DISABLED", "TEMPLATE_PAUSED", "TEMPLATE_NOT_APPROVED", "TEMPLATE_ARCHIVED",
        "OUTSIDE_SERVICE_WINDOW", "BULK_MARKETING_NOT_ALLOWED", "MARKETING_OPTED_OUT",
        "MARKETING_PAUSED_US", "USER_IN_MARKETING_EXPERIMENT",
        "USER_MARKETING_TEMPLATE_LIMIT", "PAIR_RATE_LIMITED", "MESSAGING_LIMIT_REACHED")
    # The tenant-wide rule is last and has no per-message predicate: decide() never fires it.
    assert TENANT_RULES == ("MESSAGING_LIMIT_REACHED",)
    assert tuple(code for code, _ in RULES) + TENANT_RULES == RULE_CODES


# --- the clock -----------------------------------------------------------------------------


def test_us_pause_not_before_2025_04_01() -> None:
    doc = message(recipient=US, created_at="2025-03-31T23:59:59Z")
    assert run(doc).accepted


def test_us_pause_from_2025_04_01_midnight_utc() -> None:
    doc = message(recipient=US, created_at="2025-04-01T00:00:00Z")
    assert run(doc).error_code == "MARKETING_PAUSED_US"


def test_queued_before_sent_after_is_blocked() -> None:
    doc = message(recipient=US, created_at="2025-03-30T10:00:00Z",
                  scheduled_at="2025-04-02T10:00:00Z")
    assert message_clock(doc) == parse_rfc3339("2025-04-02T10:00:00Z")
    assert run(doc).error_code == "MARKETING_PAUSED_US"


def test_fixed_clock_overrides_message_times() -> None:
    doc = message(recipient=US, created_at="2026-01-01T00:00:00Z")
    assert message_clock(doc, fixed=1.0) == 1.0
    assert run(doc, clock="2025-01-01T00:00:00Z").accepted


def test_offset_timestamps_are_understood() -> None:
    # 2025-04-01T01:00+02:00 is 2025-03-31T23:00Z: before the pause.
    assert run(message(recipient=US, created_at="2025-04-01T01:00:00+02:00")).accepted


def test_rule_until_ends_the_rule() -> None:
    policies = parse_policy(document(rules__MARKETING_PAUSED_US__until="2026-06-01T00:00:00Z"))
    assert run(message(recipient=US, created_at="2026-05-31T00:00:00Z"),
               policies=policies).error_code == "MARKETING_PAUSED_US"
    assert run(message(recipient=US, created_at="2026-06-01T00:00:00Z"),
               policies=policies).accepted


# --- monitor mode and overrides ------------------------------------------------------------


def test_monitor_mode_reports_and_accepts() -> None:
    policies = parse_policy(document(rules__MARKETING_PAUSED_US__mode="monitor"))
    decision = run(message(recipient=US), policies=policies)
    assert decision.accepted
    assert decision.monitored == ("MARKETING_PAUSED_US",)
    assert decision.violations == ()


def test_monitor_rule_beside_an_enforced_one() -> None:
    policies = parse_policy(document(rules__MARKETING_PAUSED_US__mode="monitor"))
    decision = run(message(recipient=US, origin="bulk"), policies=policies)
    assert decision.error_code == "BULK_MARKETING_NOT_ALLOWED"
    assert decision.monitored == ("MARKETING_PAUSED_US",)


def test_off_mode_disables_a_rule() -> None:
    policies = parse_policy(document(rules__BULK_MARKETING_NOT_ALLOWED__mode="off"))
    assert run(message(recipient=CA, origin="bulk"), policies=policies).accepted


def test_per_tenant_override() -> None:
    policies = parse_policy(document(tenants={
        "pilot": {"rules": {"MARKETING_PAUSED_US": {"mode": "monitor"}},
                  "parameters": {"unsupported_regions": ["CU", "IR", "KP", "SY", "RU"]}},
    }))
    assert run(message(recipient=US, tenant_id="pilot"), policies=policies).accepted
    assert run(message(recipient=US, tenant_id="acme"), policies=policies).error_code == \
        "MARKETING_PAUSED_US"
    russia = message(recipient="+79123456789", template=None, kind="template")
    russia["template"] = {"name": "t", "language": "ru"}
    assert run({**russia, "tenant_id": "pilot"}, policies=policies).error_code == \
        "RECIPIENT_REGION_UNSUPPORTED"
    assert run(russia, policies=policies).accepted


def test_decision_carries_policy_id_and_version() -> None:
    policies = parse_policy(document(id="custom", version="7"))
    decision = run(message(recipient=US), policies=policies)
    assert (decision.policy_id, decision.policy_version) == ("custom", "7")


# --- the policy document -------------------------------------------------------------------


def test_default_policy_is_shipped_and_valid() -> None:
    assert POLICY.id and POLICY.version
    assert POLICY.base.parameters.paused_regions == frozenset({"US"})
    assert POLICY.base.parameters.unsupported_regions == frozenset({"CU", "IR", "KP", "SY"})
    assert POLICY.base.parameters.marketing_cooldown_seconds == 86400
    assert (POLICY.base.parameters.pair_rate_burst,
            POLICY.base.parameters.pair_rate_interval_seconds) == (45, 6.0)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"rules__MARKETING_PAUSED_US__mode": "sometimes"}, "mode"),
    ({"rules__MARKETING_PAUSED_US__from": "April"}, "from"),
    ({"parameters__marketing_cooldown_seconds": -5}, "marketing_cooldown_seconds"),
    ({"parameters__paused_regions": ["usa"]}, "paused_regions"),
    ({"parameters__pair_rate_burst": 0}, "pair_rate_burst"),
    ({"parameters__pair_rate_interval_seconds": 0}, "pair_rate_interval_seconds"),
    ({"tenants": {"t": {"rules": {"NOT_A_RULE": {"mode": "off"}}}}}, "NOT_A_RULE"),
])
def test_invalid_policy_is_refused_with_a_reason(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        parse_policy(document(**changes))


def test_policy_missing_a_rule_is_refused() -> None:
    doc = document()
    del doc["rules"]["MARKETING_OPTED_OUT"]
    with pytest.raises(PolicyError, match="MARKETING_OPTED_OUT"):
        parse_policy(doc)


def test_policy_file_replaces_default(tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document(id="deployment", version="2")))
    assert load_policy(path).id == "deployment"
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.json")
    path.write_text("{")
    with pytest.raises(PolicyError, match="not JSON"):
        load_policy(path)


def test_rules_in_force_follow_the_clock_and_the_policy() -> None:
    # Remembered per policy and clock (a batch's decisions share both): a new clock or a
    # new policy object must be looked at again.
    window = parse_policy(document(rules__MARKETING_PAUSED_US={
        "mode": "monitor", "from": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}))
    for clock, expected in (("2025-12-31T23:59:59Z", False), ("2026-01-01T00:00:00Z", True),
                            ("2026-01-15T00:00:00Z", True), ("2026-02-01T00:00:00Z", False),
                            ("2026-01-15T00:00:00Z", True)):
        at = parse_rfc3339(clock)
        for policies in (window, POLICY):
            in_force = rules_in_force(policies.base, at)
            settings = policies.base.rules
            assert in_force == tuple((code, predicate, settings[code].mode == "monitor")
                                     for code, predicate in RULES
                                     if settings[code].active_at(at))
        # Stated, not recomputed: the window's monitor rule only inside [from, until); the
        # default policy's pause (from 2025-04-01, no end) in force, enforced, at every clock.
        in_window = {code: monitor for code, _, monitor in rules_in_force(window.base, at)}
        # in force (in monitor mode) or absent
        assert in_window.get("MARKETING_PAUSED_US") is (True if expected else None)
        default = {code: monitor for code, _, monitor in rules_in_force(POLICY.base, at)}
        assert default["MARKETING_PAUSED_US"] is False


def test_decisions_without_a_retry_time_are_shared_and_whole() -> None:
    utility = template_entry(category="UTILITY")
    first, again = run(message(recipient=CA), utility), run(message(recipient=CA), utility)
    assert first is again and first == Decision(True, None, None, None, False, None, (), (),
                                                POLICY.base.id, POLICY.base.version)
    stopped = st.apply_preference(EMPTY, preference(CA, "stop", "2026-11-26T08:00:00Z"))
    opted_out = run(message(recipient=CA), template_entry(category="MARKETING"),
                    state=stopped)
    assert opted_out.error_code == "MARKETING_OPTED_OUT" and opted_out.retry_after is None
    assert opted_out.violations[0] == "MARKETING_OPTED_OUT"
    limited = run(message(recipient=CA), utility, state=_sent(45),
                  clock="2026-11-26T12:00:01Z")
    assert limited.retry_after == parse_rfc3339("2026-11-26T12:00:06Z")  # its own retry time
    assert limited is not run(message(recipient=CA), utility, state=_sent(46),
                              clock="2026-11-26T12:00:01Z")
