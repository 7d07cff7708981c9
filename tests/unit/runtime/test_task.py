"""A task's batch is one transaction: fenced or failed mid-batch, nothing of it is kept, and
the batch read again is decided once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from processors.core.timeutil import parse_rfc3339
from processors.runtime.changelog_reader import ChangelogReader
from processors.runtime.routing import Record, partition_for
from processors.runtime.state_store import MemoryBackend, PartitionStore
from processors.runtime.task import StreamTask, first_offsets, next_offsets
from processors.runtime.task_manager import TaskManager
from processors.settings import Settings, Topics
from tests.factories import message, preference
from tests.unit.runtime.fakes import Broker, FakeProducer, FakeRestoreConsumer, make_router

PARTITIONS = 4
TOPICS = Topics()
SETTINGS = Settings(partitions=PARTITIONS)
NOW = parse_rfc3339("2026-11-26T12:00:00Z")


def numbers_on(partition: int, count: int) -> list[str]:
    found = []
    for tail in range(100_000, 200_000):
        number = f"+5511912{tail:06d}"[:14]
        if partition_for(f"acme:{number}", PARTITIONS) == partition and number not in found:
            found.append(number)
        if len(found) == count:
            return found
    raise AssertionError("no numbers found")


def records(topic: str, partition: int, documents: list[dict[str, Any]],
            first: int = 0) -> list[Record]:
    return [Record(topic, partition, first + i, None, orjson.dumps(d), NOW)
            for i, d in enumerate(documents)]


def manager(broker: Broker, producers: list[FakeProducer]) -> TaskManager:
    async def start(number: int) -> FakeProducer:
        producer = FakeProducer(broker, f"route-{number}")
        producers.append(producer)
        return producer

    return TaskManager(lambda n: PartitionStore(n, MemoryBackend()),
                       ChangelogReader(FakeRestoreConsumer(broker), SETTINGS.changelog_topic),
                       SETTINGS.changelog_topic, start)


def grouped(batch: list[Record]) -> dict[TopicPartition, list[Any]]:
    """As the consumer hands them: records per topic partition."""
    by_tp: dict[TopicPartition, list[Any]] = {}
    for record in batch:
        by_tp.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return by_tp


async def run_batch(task: StreamTask, batch: list[Record]) -> None:
    out, _ = task.process(make_router(PARTITIONS), batch, NOW)
    await task.commit(out, next_offsets(grouped(batch)), "app-route")


def decisions(broker: Broker) -> list[str]:
    return [orjson.loads(r.value or b"{}")["message_id"]
            for topic in (TOPICS.accepted, TOPICS.rejected)
            for r in broker.committed(topic)]


def test_a_task_fenced_mid_batch_keeps_nothing_and_redoes_the_batch_once() -> None:
    async def scenario() -> None:
        broker, producers = Broker(PARTITIONS), list[FakeProducer]()
        tasks = manager(broker, producers)
        await tasks.assign({0})
        task = tasks.tasks[0]
        batch = records(TOPICS.outbound, 0, [message(message_id=f"m{i}", recipient=number)
                                             for i, number in enumerate(numbers_on(0, 5))])
        FakeProducer(broker, "route-0")  # a new owner of partition 0 fences this one
        try:
            await run_batch(task, batch)
            raise AssertionError("a fenced producer committed")
        except ProducerFenced:
            task.abort()
        assert task.failed and task.store.pending == {}
        assert decisions(broker) == [] and broker.group_offsets == {}
        assert broker.committed(SETTINGS.changelog_topic) == []
        await tasks.repair(task)  # a fresh producer, as after any failed transaction
        assert producers[0].stopped and task.producer is producers[-1] and not task.failed
        await run_batch(task, batch)
        assert sorted(decisions(broker)) == [f"m{i}" for i in range(5)]
        assert broker.group_offsets == {TopicPartition(TOPICS.outbound, 0): 5}

    asyncio.run(scenario())


def test_a_batch_aborted_and_read_again_is_decided_once_and_its_state_kept_once() -> None:
    async def scenario() -> None:
        broker, producers = Broker(PARTITIONS), list[FakeProducer]()
        tasks = manager(broker, producers)
        await tasks.assign({1})
        task = tasks.tasks[1]
        who = numbers_on(1, 1)[0]
        batch = records(TOPICS.preferences, 1, [preference(who, "stop", "2026-11-26T11:00:00Z")])
        batch += records(TOPICS.outbound, 1, [message(message_id="after-stop", recipient=who)])
        producers[-1].fail_next_commit = True
        try:
            await run_batch(task, batch)
        except ConnectionError:
            task.abort()
        assert first_offsets(grouped(batch)) == {TopicPartition(TOPICS.preferences, 1): 0,
                                          TopicPartition(TOPICS.outbound, 1): 0}
        assert decisions(broker) == [] and task.store.items() == []
        await tasks.repair(task)
        await run_batch(task, batch)
        rejected = [orjson.loads(r.value or b"{}") for r in broker.committed(TOPICS.rejected)]
        assert [(r["message_id"], r["error_code"]) for r in rejected] == \
            [("after-stop", "MARKETING_OPTED_OUT")]
        # the changelog holds the committed state changes, and the checkpoint follows them
        assert broker.committed(SETTINGS.changelog_topic, 1)
        assert task.store.checkpoint() == len(broker.logs[(SETTINGS.changelog_topic, 1)])

    asyncio.run(scenario())
