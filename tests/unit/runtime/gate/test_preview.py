"""A check (POST /v1/check) answers what the stream would decide now and records nothing; a
partition held elsewhere is named so that its owner can answer."""

from __future__ import annotations

from typing import Any

from processors.core.timeutil import format_rfc3339
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.gate import recipient_state
from processors.runtime.gate.preview import StateReader
from tests.factories import inbound, message, preference
from tests.unit.runtime.gate.test_routing_links import NUMBER, T0, TOPICS, X1, Cluster, send

VOLATILE = {"decided_at", "preview", "already_decided", "decision"}


def reader(cluster: Cluster, owned: set[int]) -> StateReader:
    def read(partition: int) -> Any:
        if partition not in owned:
            return None
        store = cluster.stores[partition]
        return lambda key: recipient_state.load_committed(store, key)
    return read


def everything(cluster: Cluster) -> dict[int, list[tuple[bytes, bytes]]]:
    return {p: store.items() for p, store in cluster.stores.items()}


def same_decision(preview: dict[str, Any], decided: dict[str, Any]) -> bool:
    return {k: v for k, v in preview.items() if k not in VOLATILE} == \
        {k: v for k, v in decided.items() if k not in VOLATILE}


def test_a_check_answers_what_the_stream_then_decides_and_records_nothing() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.preferences, preference(NUMBER, "stop", format_rfc3339(T0 - 60)), T0)
    checked = message(message_id="checked", recipient=NUMBER, created_at=format_rfc3339(T0))
    before = everything(cluster)
    answers = [cluster.router.previews.preview(checked, reader(cluster, {0, 1, 2, 3}), T0)
               for _ in range(100)]
    assert everything(cluster) == before, "a check changed the state"
    record = answers[0].record
    assert record is not None and record["preview"] is True
    assert record["error_code"] == "MARKETING_OPTED_OUT" and "already_decided" not in record
    assert all(answer == answers[0] for answer in answers)
    send(cluster, "checked", NUMBER, T0)  # the stream, right after
    assert same_decision(record, cluster.decisions["checked"])
    again = cluster.router.previews.preview(checked, reader(cluster, {0, 1, 2, 3}), T0).record
    assert again is not None and again["already_decided"] is True


def test_checks_use_no_pair_budget() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.inbound, inbound(NUMBER, format_rfc3339(T0 - 10)), T0)
    free_form = message(message_id="x", recipient=NUMBER, kind="free_form", template=None,
                        created_at=format_rfc3339(T0))
    for _ in range(200):  # far past the pair budget of 45
        record = cluster.router.previews.preview(free_form, reader(cluster, {0, 1, 2, 3}),
                                                 T0).record
        assert record is not None and "error_code" not in record
    for index in range(45):
        send(cluster, f"s{index}", NUMBER, T0, kind="free_form", template=None)
    assert all(cluster.code(f"s{index}") is None for index in range(45))


def test_a_partition_held_elsewhere_is_named() -> None:
    cluster = Cluster()
    checked = message(message_id="m", recipient=NUMBER, created_at=format_rfc3339(T0))
    answer = cluster.router.previews.preview(checked, reader(cluster, set()), T0)
    assert answer.record is None and answer.partition == partition_for(f"acme:{NUMBER}", 4)


def test_a_linked_bsuid_is_checked_with_its_numbers_state_on_the_numbers_owner() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 30)),
                                     "user_id": X1}, T0)
    cluster.publish(TOPICS.preferences, preference(NUMBER, "stop", format_rfc3339(T0 - 20)), T0)
    checked = message(message_id="to-bsuid", recipient=X1, created_at=format_rfc3339(T0))
    bsuid_home = partition_for(f"acme:{X1}", 4)
    number_home = partition_for(f"acme:{NUMBER}", 4)
    first = cluster.router.previews.preview(checked, reader(cluster, {bsuid_home}), T0)
    assert first.record is None and (first.partition, first.head) == (number_home, NUMBER)
    answer = cluster.router.previews.preview(checked, reader(cluster, {number_home}), T0,
                                    head=first.head)
    assert answer.record is not None and answer.record["error_code"] == "MARKETING_OPTED_OUT"
    send(cluster, "to-bsuid", X1, T0)
    assert same_decision(answer.record, cluster.decisions["to-bsuid"])


def test_the_recipient_view_shows_the_users_state_from_every_identity() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 600)),
                                     "user_id": X1}, T0)
    cluster.publish(TOPICS.preferences, preference(X1, "stop", format_rfc3339(T0 - 300)), T0)
    send(cluster, "promo", X1, T0 - 60)  # marketing to an opted-out user: rejected
    send(cluster, "reply", NUMBER, T0 - 1, kind="free_form", template=None)
    everywhere = reader(cluster, {0, 1, 2, 3})
    before = everything(cluster)
    view = cluster.router.previews.recipient("acme", X1, everywhere, T0).record
    assert everything(cluster) == before, "asking changed the state"
    assert view is not None and view["user"] == NUMBER
    assert view["linked"][0]["identity"] == X1
    assert view["service_window"] == {"last_inbound_at": format_rfc3339(T0 - 600),
                                      "open_until": format_rfc3339(T0 - 600 + 86400)}
    assert view["marketing"] == {"preference": "stop", "since": format_rfc3339(T0 - 300),
                                 "opted_out": True}
    assert [(d["message_id"], d["outcome"]) for d in view["last_decisions"]] == [
        ("reply", "accepted"), ("promo", "MARKETING_OPTED_OUT")]
    # The accepted free-form reply, a second ago, used one send of the pair budget (45).
    assert [p["sends_available"] for p in view["pair_rate"]] == [44]
    # The same user asked by its number, on the number's owner only.
    number_home = partition_for(f"acme:{NUMBER}", 4)
    by_number = cluster.router.previews.recipient("acme", NUMBER,
                                                  reader(cluster, {number_home}), T0)
    assert by_number.record is not None
    assert by_number.record["last_decisions"] == view["last_decisions"]
    elsewhere = cluster.router.previews.recipient("acme", NUMBER, reader(cluster, set()), T0)
    assert elsewhere.record is None and elsewhere.partition == number_home
