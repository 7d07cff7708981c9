"""A user who changes number is still the same user (issue 33, item 4): Meta's
user_changed_number system message, the pure identity rules, and the offline check. No broker."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.cli.main import main
from processors.core import webhooks
from processors.core.decode import DecodeError
from processors.core.enrich import BSUID
from processors.core.policy import EMPTY
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.timeutil import parse_rfc3339
from tests.factories import inbound, meta_body, preference, status
from tests.unit.core.test_identities import (
    BR_BSUID,
    CA,
    CA_BSUID,
    CATALOG,
    TOPICS,
    Run,
    event,
    free_form,
    hhmmss,
    send,
)

NEW = "+14165550199"  # the fixture's system.wa_id: the number CA changed to
OTHER = "+14165550177"
RECEIVED = parse_rfc3339("2026-11-26T12:05:00Z")


def change(old: str, new: str, at: str, **more: Any) -> dict[str, Any]:
    """The gate's document of a user_changed_number (as webhooks.translate makes it)."""
    return event(TOPICS.inbound, {"tenant_id": "acme", "sender": new, "previous_number": old,
                                  "channel": "system", "timestamp": at, **more})


def system_body(**system: Any) -> dict[str, Any]:
    body = copy.deepcopy(meta_body("system_user_changed_number"))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    for name, value in system.items():
        if name == "from":
            message.pop("from") if value is None else message.update({"from": value})
        elif value is None:
            message["system"].pop(name)
        else:
            message["system"][name] = value
    return body


# --- Meta's system message ------------------------------------------------------------------


def test_user_changed_number_names_the_new_number_and_the_old_one() -> None:
    assert webhooks.translate(meta_body("system_user_changed_number"), RECEIVED, "acme") == [
        ("inbound_message", {"tenant_id": "acme", "sender": NEW, "previous_number": CA,
                             "channel": "system", "timestamp": "2026-11-26T12:00:00.000Z"})]


def test_the_previous_bsuids_meta_names_are_carried() -> None:
    [(_, document)] = webhooks.translate(system_body(previous_user_id=CA_BSUID,
                                                     user_id="CA.777"), RECEIVED, "acme")
    assert (document["previous_user_id"], document["user_id"]) == (CA_BSUID, "CA.777")


@pytest.mark.parametrize(("system", "where"), [
    ({"wa_id": None}, "system.wa_id is missing"),
    ({"wa_id": "not-a-number"}, "system.wa_id is not a phone number"),
    ({"wa_id": BR_BSUID}, "system.wa_id is not a phone number"),
    ({"from": None}, "from is missing"),
    ({"from": "12"}, "from is not a phone number"),
])
def test_a_malformed_number_change_is_a_dead_letter(system: dict[str, Any], where: str) -> None:
    with pytest.raises(DecodeError) as caught:
        webhooks.translate(system_body(**system), RECEIVED, "acme")
    assert caught.value.reason == "schema_invalid"
    assert where in str(caught.value)


def test_other_system_messages_are_not_the_user_writing() -> None:
    # user_changed_user_id: Meta's page lists it, its new-value fields are not in the stored
    # copy of the page (README); it is not taken as an inbound message either.
    assert webhooks.translate(system_body(type="user_changed_user_id"), RECEIVED, "acme") == []


def test_a_number_change_opens_no_window() -> None:
    document = {"tenant_id": "acme", "sender": NEW, "previous_number": CA, "channel": "system",
                "timestamp": "2026-11-26T12:00:00Z"}
    assert st.apply_inbound(EMPTY, document) == EMPTY


# --- the pure rules ---------------------------------------------------------------------------


def test_named_links_of_a_number_change() -> None:
    document = {"previous_number": CA[1:], "user_id": "CA.1", "previous_user_id": CA_BSUID,
                "previous_parent_user_id": "CA.ENT.5"}
    assert ids.named_links(document, NEW) == [
        (ids.PREVIOUS_NUMBER, CA), (BSUID, "CA.1"), (ids.PREVIOUS_BSUID, CA_BSUID),
        (ids.PREVIOUS_PARENT_BSUID, "CA.ENT.5")]
    assert ids.named_links({"previous_number": NEW}, NEW) == []  # not itself
    assert ids.named_links({"previous_number": "CA.1"}, NEW) == []  # a number, not a BSUID


def test_the_previous_number_kind_leaves_the_bsuid_slot_free() -> None:
    head, _, _ = ids.link(EMPTY, ids.PREVIOUS_NUMBER, CA, 10.0)
    head, replaced, changed = ids.link(head, BSUID, "CA.1", 20.0)
    assert (replaced, changed) == (None, True)
    assert ids.members(head) == ["CA.1", CA]


def test_an_identity_is_listed_once() -> None:
    head, _, _ = ids.link(EMPTY, BSUID, CA_BSUID, 10.0)
    head, _, _ = ids.link(head, ids.PREVIOUS_BSUID, CA_BSUID, 20.0)
    assert head.links == ((ids.PREVIOUS_BSUID, CA_BSUID, 20.0),)


def test_the_same_change_twice_changes_nothing() -> None:
    head, _, first = ids.link(EMPTY, ids.PREVIOUS_NUMBER, CA, 10.0)
    again, replaced, second = ids.link(head, ids.PREVIOUS_NUMBER, CA, 10.0)
    old, _, claimed = ids.claim(EMPTY, NEW, 10.0)
    old_again, _, claimed_again = ids.claim(old, NEW, 10.0)
    assert (first, second, replaced, again) == (True, False, None, head)
    assert (claimed, claimed_again, old_again) == (True, False, old)


def test_a_change_back_makes_the_number_head_again() -> None:
    old, _, _ = ids.claim(EMPTY, NEW, 10.0)  # CA -> NEW at 10: CA follows NEW
    head, former, stale = ids.becomes_head(old, 20.0)  # NEW -> CA at 20
    assert (head.home, former, stale) == (None, NEW, False)


def test_a_change_older_than_the_new_numbers_own_move_is_stale() -> None:
    moved, _, _ = ids.claim(EMPTY, OTHER, 30.0)  # NEW followed OTHER since 30
    assert ids.becomes_head(moved, 20.0) == (moved, None, True)


def test_a_number_heading_a_later_change_is_not_claimed() -> None:
    # NEW -> CA at 20 seen first; the older CA -> NEW at 10 arrives late: no loop.
    head, _, _ = ids.link(EMPTY, ids.PREVIOUS_NUMBER, NEW, 20.0)
    assert ids.claim(head, NEW, 10.0) == (head, None, False)


def test_an_old_number_lets_its_links_go() -> None:
    old, _, _ = ids.link(EMPTY, BSUID, CA_BSUID, 5.0)
    old, _, _ = ids.claim(old, NEW, 10.0)
    followed, let_go = ids.follow(old)
    assert (followed.links, followed.home, let_go) == ((), (NEW, 10.0), [(BSUID, CA_BSUID)])


# --- the offline check (outbound-gate check, the report) ------------------------------------


def test_an_opt_out_on_the_old_number_follows_the_user_to_the_new_one() -> None:
    run = Run([
        event(TOPICS.preferences, preference(CA, "stop", hhmmss(0))),
        send("new-before", NEW, hhmmss(600)),
        event(TOPICS.inbound, meta_body("system_user_changed_number")),  # at noon
        send("new-after", NEW, hhmmss(1800)),
        send("old-after", CA, hhmmss(1800)),
    ])
    assert run.codes() == {"new-before": None, "new-after": "MARKETING_OPTED_OUT",
                           "old-after": "MARKETING_OPTED_OUT"}


def test_window_and_cooldown_follow_the_user() -> None:
    run = Run([
        event(TOPICS.inbound, inbound(CA, hhmmss(0))),
        event(TOPICS.statuses, status(OTHER, 131049, hhmmss(60))),
        change(CA, NEW, hhmmss(120)),
        change(OTHER, "+14165550166", hhmmss(120)),
        free_form("free-form-new", NEW, hhmmss(600)),
        free_form("free-form-unrelated", "+14165550166", hhmmss(600)),
        send("marketing-new", "+14165550166", hhmmss(600)),
    ])
    assert run.codes() == {"free-form-new": None,
                           "free-form-unrelated": "OUTSIDE_SERVICE_WINDOW",
                           "marketing-new": "USER_MARKETING_TEMPLATE_LIMIT"}


def test_a_change_arriving_before_the_old_numbers_events_still_links() -> None:
    run = Run([
        change(CA, NEW, hhmmss(0)),
        event(TOPICS.preferences, preference(CA, "stop", hhmmss(-600))),  # reported late
        send("new", NEW, hhmmss(600)),
    ])
    assert run.codes() == {"new": "MARKETING_OPTED_OUT"}


def test_a_change_back_keeps_one_user() -> None:
    run = Run([
        event(TOPICS.preferences, preference(CA, "stop", hhmmss(0))),
        change(CA, NEW, hhmmss(60)),
        change(NEW, CA, hhmmss(120)),
        change(CA, NEW, hhmmss(60)),  # the first change again, redelivered: stale now
        send("ca", CA, hhmmss(600)),
        send("new", NEW, hhmmss(600)),
    ])
    assert run.codes() == {"ca": "MARKETING_OPTED_OUT", "new": "MARKETING_OPTED_OUT"}
    states = run.check.states
    assert states[f"acme:{CA}"].home is None
    assert ids.follows(states[f"acme:{NEW}"], CA)


def test_the_previous_bsuid_meta_names_follows_the_new_number() -> None:
    run = Run([
        event(TOPICS.statuses, {**status(CA, None, hhmmss(0), state="delivered"),
                                "user_id": CA_BSUID}),
        event(TOPICS.preferences, preference(CA_BSUID, "stop", hhmmss(30))),
        change(CA, NEW, hhmmss(60), previous_user_id=CA_BSUID, user_id="CA.4242"),
        send("new", NEW, hhmmss(600)),
        send("old-bsuid", CA_BSUID, hhmmss(600)),
        send("new-bsuid", "CA.4242", hhmmss(600)),
    ])
    assert run.codes() == {"new": "MARKETING_OPTED_OUT", "old-bsuid": "MARKETING_OPTED_OUT",
                           "new-bsuid": "MARKETING_OPTED_OUT"}


def test_a_bsuid_the_change_does_not_name_is_on_its_own() -> None:
    run = Run([
        event(TOPICS.statuses, {**status(CA, None, hhmmss(0), state="delivered"),
                                "user_id": CA_BSUID}),
        event(TOPICS.preferences, preference(CA, "stop", hhmmss(30))),
        change(CA, NEW, hhmmss(60)),
        send("new", NEW, hhmmss(600)),
        send("old-bsuid", CA_BSUID, hhmmss(600)),
    ])
    assert run.codes() == {"new": "MARKETING_OPTED_OUT", "old-bsuid": None}


def test_the_check_command_rejects_the_new_number_of_an_opted_out_user(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [event(TOPICS.templates, entry) for entry in CATALOG] + [
        event(TOPICS.preferences, preference(CA, "stop", hhmmss(0))),
        event(TOPICS.inbound, meta_body("system_user_changed_number")),
        send("to-new-number", NEW, hhmmss(600))]
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    main(["check", str(path)])
    [decided] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()
                 if line.startswith("{")]
    assert (decided["message_id"], decided["decision"], decided["error_code"]) == (
        "to-new-number", "rejected", "MARKETING_OPTED_OUT")
