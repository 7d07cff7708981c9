"""A rebalance moves a partition: its old owner closes the task, the new owner restores the
state from the changelog and decides with it."""

from __future__ import annotations

import asyncio

import orjson

from processors.runtime.state_store import PartitionStore
from tests.factories import message, preference
from tests.unit.runtime.fakes import Broker, FakeProducer
from tests.unit.runtime.test_task import (
    PARTITIONS,
    TOPICS,
    manager,
    numbers_on,
    records,
    run_batch,
)


def test_a_partition_moves_to_another_worker_with_its_state() -> None:
    async def scenario() -> None:
        broker = Broker(PARTITIONS)
        first_producers: list[FakeProducer] = []
        second_producers: list[FakeProducer] = []
        first, second = manager(broker, first_producers), manager(broker, second_producers)
        await first.assign({0, 2})
        who = numbers_on(2, 1)[0]
        await run_batch(first.tasks[2], records(
            TOPICS.preferences, 2, [preference(who, "stop", "2026-11-26T11:00:00Z")]))
        moved_store: PartitionStore = first.tasks[2].store
        # the group rebalances: partition 2 goes to the second worker
        await first.assign({0})
        await second.assign({2, 3})
        assert set(first.tasks) == {0} and set(second.tasks) == {2, 3}
        assert first_producers[1].stopped  # partition 2's producer on the first worker
        assert moved_store.backend is not None
        restored = dict(second.tasks[2].store.items())
        assert any(who.encode() in key for key in restored), "state not restored"
        await run_batch(second.tasks[2], records(
            TOPICS.outbound, 2, [message(message_id="on-new-owner", recipient=who)], first=0))
        rejected = [orjson.loads(r.value or b"{}") for r in broker.committed(TOPICS.rejected)]
        assert [(r["message_id"], r["error_code"]) for r in rejected] == \
            [("on-new-owner", "MARKETING_OPTED_OUT")]

    asyncio.run(scenario())
