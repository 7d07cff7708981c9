"""processors.core.step: the one sequence of deciding an outbound message, which the live
processor and the offline check both run (its parts, judge() and the messaging-limit rule, have
their own tests)."""

from __future__ import annotations

from processors.core import step
from processors.core.policy import EMPTY, load_policy
from processors.core.policy import messaging_limit as ml
from processors.core.policy import state as st
from processors.core.timeutil import parse_rfc3339
from tests.factories import NOW, inbound, message, template_entry

POLICY = load_policy().base
CLOCK = parse_rfc3339(NOW)
CA = "+14165550123"
BSUID = "CA.13491208655302741918"
UTILITY = template_entry("promo", "UTILITY")
KNOWN_250 = (250, True)


class Asked:
    """A learned-limit lookup that counts how often it was asked."""

    def __init__(self, answer: tuple[int | None, bool] = KNOWN_250) -> None:
        self.answer, self.times = answer, 0

    def __call__(self) -> tuple[int | None, bool]:
        self.times += 1
        return self.answer


def user(record: st.RecipientState = EMPTY, addressed: str = CA) -> step.User:
    return step.User(CA, record, record, addressed)


def test_an_invalid_recipient_is_judged_with_no_state() -> None:
    asked = Asked()
    decided = step.decide(message(recipient="+1202555"), None, UTILITY, None, POLICY, CLOCK,
                          asked, dedup=True)
    assert decided.verdict is not None
    assert decided.verdict.decision.error_code == "INVALID_RECIPIENT"
    assert decided.slot_limit is None and asked.times == 0


def test_a_repeated_message_id_is_dropped_only_with_dedup() -> None:
    doc = message(recipient=CA)
    seen = st.with_decided(EMPTY, doc["message_id"], CLOCK - 60)
    assert step.decide(doc, user(seen), UTILITY, None, POLICY, CLOCK, Asked(), True).duplicate
    again = step.decide(doc, user(seen), UTILITY, None, POLICY, CLOCK, Asked(), False)
    assert not again.duplicate and again.verdict is not None


def test_a_template_outside_the_window_asks_the_tenants_slots_once() -> None:
    asked = Asked()
    decided = step.decide(message(recipient=CA), user(), UTILITY, None, POLICY, CLOCK, asked,
                          True)
    assert decided.slot_limit == 250 and asked.times == 1
    assert decided.verdict is not None and decided.verdict.decision.accepted
    # Meta never stated a limit and the policy pins none: the rule is off for the tenant.
    unknown = step.decide(message(recipient=CA), user(), UTILITY, None, POLICY, CLOCK,
                          Asked((None, False)), True)
    assert unknown.slot_limit is None


def test_no_slot_is_asked_for_in_the_window_for_a_counted_user_or_a_rejection() -> None:
    asked = Asked()
    writing = st.apply_inbound(EMPTY, inbound(CA, "2026-11-26T11:00:00Z"))
    counted = st.with_slot(EMPTY, CLOCK - 3600)
    paused = template_entry("promo", "UTILITY", "PAUSED")
    for record, entry in [(writing, UTILITY), (counted, UTILITY), (EMPTY, paused)]:
        decided = step.decide(message(recipient=CA), user(record), entry, None, POLICY, CLOCK,
                              asked, True)
        assert decided.slot_limit is None
    assert asked.times == 0


def test_a_linked_bsuid_is_decided_with_its_number() -> None:
    linked = step.User(CA, EMPTY, EMPTY, BSUID)
    assert linked.linked_number == CA
    assert user().linked_number is None
    decided = step.decide(message(recipient=BSUID), linked, UTILITY, None, POLICY, CLOCK,
                          Asked(), True)
    assert decided.verdict is not None
    assert decided.verdict.enrichment.as_dict()["recipient_e164"] == CA


def test_settle_and_record() -> None:
    doc = message(recipient=CA, business_number="+15550001")
    decided = step.decide(doc, user(), UTILITY, None, POLICY, CLOCK, Asked(), True)
    assert decided.verdict is not None
    refused = step.settle(decided.verdict, ml.Admission(False, False, CLOCK + 60), doc, POLICY,
                          CLOCK)
    assert refused.decision.error_code == ml.CODE
    # A refusal records its idempotency key and outcome, no budget; without dedup, nothing.
    after_refusal = step.recorded(EMPTY, doc, refused, POLICY, CLOCK, True)
    assert st.already_decided(after_refusal, doc["message_id"])
    assert after_refusal.pair == EMPTY.pair and after_refusal.slot is None
    assert step.recorded(EMPTY, doc, refused, POLICY, CLOCK, False) is EMPTY
    # An admission that opens a slot: the slot and the pair budget are the user's.
    admitted = step.settle(decided.verdict, ml.NEW_SLOT, doc, POLICY, CLOCK)
    assert admitted is decided.verdict
    after = step.recorded(EMPTY, doc, admitted, POLICY, CLOCK, True, opened_slot=True)
    assert st.slot_open(after, CLOCK) and after.pair != EMPTY.pair
    assert st.already_decided(after, doc["message_id"])
