"""The seeded workload (processors.tools.loadgen): its identity mix, its keys, its determinism."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import orjson
import phonenumbers
import pytest

from processors.core.enrich import BSUID, PARENT_BSUID, PHONE, parse_recipient
from processors.core.policy import load_policy
from processors.settings import Topics
from processors.tools.loadgen import Record, Workload, identity_mix
from processors.tools.offline import OfflineCheck

NOW = 1_796_000_000.0
FIELD = {"statuses": "recipient", "inbound": "sender", "preferences": "recipient"}


@lru_cache(maxsize=4)
def events(seed: int = 7, count: int = 40_000, share: float = 0.10) -> tuple[Record, ...]:
    return tuple(Workload(seed, recipients=5_000, bsuid_share=share).events(count, NOW))


def named(record: Record) -> str | None:
    """The recipient or sender a record names, if it is a readable document."""
    try:
        document = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    value = document.get("recipient" if record.topic == "outbound" else FIELD[record.topic])
    return value if isinstance(value, str) else None


def test_the_same_seed_gives_the_same_records() -> None:
    again = tuple(Workload(7, recipients=5_000).events(40_000, NOW))
    assert again == events()
    assert tuple(Workload(8, recipients=5_000).events(2_000, NOW)) != events()[:2_000]


def test_keys_are_the_tenant_and_the_identity_the_gate_keys_state_by() -> None:
    checked = 0
    for record in events():
        recipient = named(record)
        if recipient is None:
            continue
        document = orjson.loads(record.value or b"")
        identity = parse_recipient(recipient).identity
        assert identity is not None, record
        assert record.key == f"{document['tenant_id']}:{identity}".encode(), record
        checked += 1
    assert checked > 39_000


def test_the_identity_mix() -> None:
    records = events()
    kinds = Counter(parse_recipient(r).kind for r in map(named, records) if r is not None)
    messages = Counter(parse_recipient(recipient).kind for record in records
                       if record.topic == "outbound" and (recipient := named(record)))
    share = (messages[BSUID] + messages[PARENT_BSUID]) / sum(messages.values())
    assert 0.08 < share < 0.12, messages
    assert messages[PARENT_BSUID] > 0 and kinds[PHONE] > 0
    mix = identity_mix(records)
    assert mix["outbound"] == sum(1 for r in records if r.topic == "outbound")
    assert 0.15 < mix["state_linking"] / mix["state_events"] < 0.35, mix
    assert 0.05 < mix["state_bsuid_only"] / mix["state_events"] < 0.25, mix
    assert mix["outbound_to_bsuid"] >= messages[BSUID] + messages[PARENT_BSUID]


def test_each_user_has_one_bsuid_of_its_region_and_username_users_no_number() -> None:
    workload = Workload(7, recipients=5_000)
    users = [workload.user(e164) for e164 in workload.recipients]
    for user in users[:500]:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(user.e164))
        assert parse_recipient(user.bsuid).kind == BSUID
        assert parse_recipient(user.parent).kind == PARENT_BSUID
        assert user.bsuid.startswith(f"{region}.") and user.parent.startswith(f"{region}.ENT.")
        assert workload.user(user.e164) == user
    assert len({user.bsuid for user in users}) == len(users)
    assert 0.01 < sum(user.username for user in users) / len(users) < 0.03
    usernames = {user.e164[1:] for user in users if user.username} | \
        {user.e164 for user in users if user.username}
    for record in events():
        if record.value and record.topic != "outbound":
            document = orjson.loads(record.value)
            assert document[FIELD[record.topic]] not in usernames
            if "user_id" in document:  # links the number named to that user's BSUID
                number = parse_recipient(document[FIELD[record.topic]]).identity
                assert number is not None
                assert document["user_id"] == workload.user(number).bsuid


def test_linking_events_name_the_number_and_the_bsuid() -> None:
    linking = [orjson.loads(r.value or b"") for r in events()
               if r.topic != "outbound" and b'"user_id"' in (r.value or b"")]
    assert linking
    for document in linking:
        primary = document["sender" if "sender" in document else "recipient"]
        assert parse_recipient(primary).kind == PHONE
        assert parse_recipient(document["user_id"]).kind == BSUID
        if "parent_user_id" in document:
            assert parse_recipient(document["parent_user_id"]).kind == PARENT_BSUID


def test_a_zero_share_is_the_phone_only_workload() -> None:
    records = events(share=0.0)
    kinds = Counter(parse_recipient(r).kind for r in map(named, records) if r is not None)
    assert set(kinds) == {PHONE}, kinds  # not vacuous: records that name no one would pass all()
    assert not any(b"user_id" in (r.value or b"") for r in records)


def test_number_changes_follow_their_share() -> None:
    """The benchmark's --number-changes 0 (an A/B against a tree older than the number-change
    handling) gives none, and only that differs: the other records are the same."""
    def changes(records: tuple[Record, ...]) -> int:
        return identity_mix(records)["state_number_changes"]

    default = events()
    none = tuple(Workload(7, recipients=5_000, number_changes=0.0).events(40_000, NOW))
    assert changes(default) > 0 and changes(none) == 0
    assert len(none) == len(default)
    outbound = [r for r in none if r.topic == "outbound"]
    assert len(outbound) == sum(1 for r in default if r.topic == "outbound")


@pytest.mark.parametrize("seed", [7, 42])
def test_the_offline_check_takes_every_state_event_and_refuses_otp_to_bsuids(seed: int) -> None:
    topics = Topics()
    workload = Workload(seed, recipients=5_000)
    check = OfflineCheck(load_policy())
    lines = [orjson.dumps({"topic": topics.templates, "value": orjson.loads(r.value or b"")})
             for r in workload.catalog(NOW)]
    outcomes: Counter[str] = Counter()
    for record in workload.events(20_000, NOW):
        if record.topic == "outbound":
            lines.append(record.value or b"")
        else:
            lines.append(orjson.dumps({"topic": getattr(topics, record.topic),
                                       "value": orjson.loads(record.value or b"")}))
    for number, line in enumerate(lines, start=1):
        result = check.line(number, line)
        if result is not None:
            outcomes[result.get("error_code") or result.get("reason") or "accepted"] += 1
    assert check.summary.state_events == sum(1 for line in lines if line.startswith(b'{"topic"'))
    assert outcomes["BSUID_RECIPIENT_UNSUPPORTED"] > 0
    assert outcomes["accepted"] > 0
