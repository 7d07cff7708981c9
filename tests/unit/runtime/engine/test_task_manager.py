"""A rebalance moves a partition: its old owner closes the task, the new owner restores the
state from the changelog and decides with it."""

from __future__ import annotations

import orjson

from tests.factories import message, preference
from tests.unit.runtime.engine.test_task import (
    NOW,
    PARTITIONS,
    TOPICS,
    numbers_on,
    records,
    route_loop,
)
from tests.unit.runtime.fakes import Broker


def test_a_partition_moves_to_another_worker_with_its_state() -> None:
    broker = Broker(PARTITIONS)
    first = route_loop(broker, {0, 2}, "route-w1")
    who = numbers_on(2, 1)[0]
    first.process(records(TOPICS.preferences, 2,
                          [preference(who, "stop", "2026-11-26T11:00:00Z")]), NOW)
    assert first.tasks is not None
    moved = first.tasks.tasks[2].store
    # the group rebalances: partition 2 goes to the second worker
    first.tasks.assign({0})
    second = route_loop(broker, {2, 3}, "route-w2")
    assert second.tasks is not None
    assert set(first.tasks.tasks) == {0} and set(second.tasks.tasks) == {2, 3}
    assert moved.items() == []  # closed on the first worker (a memory store forgets)
    restored = dict(second.tasks.tasks[2].store.items())
    assert any(who.encode() in key for key in restored), "state not restored"
    second.process(records(TOPICS.outbound, 2, [message(message_id="on-new-owner",
                                                        recipient=who)]), NOW)
    rejected = [orjson.loads(r.value or b"{}") for r in broker.committed(TOPICS.rejected)]
    assert [(r["message_id"], r["error_code"]) for r in rejected] == \
        [("on-new-owner", "MARKETING_OPTED_OUT")]
