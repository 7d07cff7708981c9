"""A batch is one transaction for every task in it: fenced or failed mid-batch, nothing of it
is kept, and the batch read again is decided once."""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import TopicPartition

from processors.core.timeutil import parse_rfc3339
from processors.runtime.engine.changelog_reader import ChangelogReader
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Record
from processors.runtime.engine.state_store import MemoryBackend, PartitionStore
from processors.runtime.engine.stream_thread import RouteLoop
from processors.runtime.engine.task_manager import TaskManager
from processors.settings import Settings, Topics
from tests.factories import message, preference
from tests.unit.runtime.fakes import (
    Broker,
    FakeConsumer,
    FakeProducer,
    FakeRestoreConsumer,
    make_router,
)

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


def manager(broker: Broker) -> TaskManager:
    return TaskManager(lambda n: PartitionStore(n, MemoryBackend()),
                       ChangelogReader(FakeRestoreConsumer(broker), SETTINGS.changelog_topic))


def route_loop(broker: Broker, numbers: set[int], transactional_id: str = "route-w1") -> RouteLoop:
    """A worker's route loop holding these partition numbers, with fake clients (no thread)."""
    loop = RouteLoop(SETTINGS, make_router(PARTITIONS), make_router(PARTITIONS).metrics,
                     lambda: True)
    loop.tasks = manager(broker)
    loop.tasks.assign(numbers)
    loop.producer = FakeProducer(broker, transactional_id, loop.collector.delivered)
    loop.consumer = FakeConsumer(broker, [
        TopicPartition(topic, n) for topic in loop.processor.sources for n in numbers])
    loop.request_stop()  # no pause after a failed batch
    return loop


def decisions(broker: Broker) -> list[str]:
    return [orjson.loads(r.value or b"{}")["message_id"]
            for topic in (TOPICS.accepted, TOPICS.rejected)
            for r in broker.committed(topic)]


def test_a_worker_fenced_mid_batch_keeps_nothing_and_redoes_the_batch_once() -> None:
    broker = Broker(PARTITIONS)
    loop = route_loop(broker, {0, 1})
    batch = [*records(TOPICS.outbound, 0, [message(message_id=f"m{i}", recipient=number)
                                           for i, number in enumerate(numbers_on(0, 3))]),
             *records(TOPICS.outbound, 1, [message(message_id=f"n{i}", recipient=number)
                                           for i, number in enumerate(numbers_on(1, 2))])]
    FakeProducer(broker, "route-w1", lambda *_: None)  # its next life fences this one
    loop.new_producer = lambda: FakeProducer(  # type: ignore[method-assign]
        broker, "route-w1", loop.collector.delivered)
    loop.process(batch, NOW)
    assert decisions(broker) == [] and broker.group_offsets == {}
    assert broker.committed(SETTINGS.changelog_topic) == []
    assert all(task.store.pending == {} for task in loop.tasks.tasks.values())  # type: ignore[union-attr]
    assert loop.consumer.seeks == {  # type: ignore[union-attr]
        (TOPICS.outbound, 0): 0, (TOPICS.outbound, 1): 0}
    loop.process(batch, NOW)  # read again, with the new producer
    assert sorted(decisions(broker)) == ["m0", "m1", "m2", "n0", "n1"]
    assert broker.group_offsets == {(TOPICS.outbound, 0): 3, (TOPICS.outbound, 1): 2}


def test_a_zombie_whose_group_moved_on_cannot_commit_offsets() -> None:
    broker = Broker(PARTITIONS)
    loop = route_loop(broker, {2})
    broker.generation += 1  # the group rebalanced without this worker (KIP-447 fencing)
    loop.process(records(TOPICS.outbound, 2, [message(message_id="z", recipient=numbers_on(
        2, 1)[0])]), NOW)
    assert decisions(broker) == [] and broker.group_offsets == {}
    assert loop.producer.aborted == 1  # type: ignore[union-attr]


def test_a_batch_aborted_and_read_again_is_decided_once_and_its_state_kept_once() -> None:
    broker = Broker(PARTITIONS)
    loop = route_loop(broker, {1})
    who = numbers_on(1, 1)[0]
    batch = records(TOPICS.preferences, 1, [preference(who, "stop", "2026-11-26T11:00:00Z")])
    batch += records(TOPICS.outbound, 1, [message(message_id="after-stop", recipient=who)])
    loop.producer.fail_next_commit = True  # type: ignore[union-attr]
    loop.process(batch, NOW)
    assert loop.consumer.seeks == {  # type: ignore[union-attr]
        (TOPICS.preferences, 1): 0, (TOPICS.outbound, 1): 0}
    task = loop.tasks.tasks[1]  # type: ignore[union-attr]
    assert decisions(broker) == [] and task.store.items() == []
    loop.process(batch, NOW)
    rejected = [orjson.loads(r.value or b"{}") for r in broker.committed(TOPICS.rejected)]
    assert [(r["message_id"], r["error_code"]) for r in rejected] == \
        [("after-stop", "MARKETING_OPTED_OUT")]
    # the changelog holds the committed state changes, and the checkpoint follows them
    assert broker.committed(SETTINGS.changelog_topic, 1)
    assert task.store.checkpoint() == len(broker.logs[(SETTINGS.changelog_topic, 1)])
    assert broker.group_offsets == {(TOPICS.preferences, 1): 1, (TOPICS.outbound, 1): 1}


def test_records_of_a_partition_no_longer_owned_are_neither_decided_nor_committed() -> None:
    broker = Broker(PARTITIONS)
    loop = route_loop(broker, {0})
    batch = [*records(TOPICS.outbound, 0, [message(message_id="mine",
                                                   recipient=numbers_on(0, 1)[0])]),
             *records(TOPICS.outbound, 3, [message(message_id="theirs",
                                                   recipient=numbers_on(3, 1)[0])])]
    loop.process(batch, NOW)
    assert decisions(broker) == ["mine"]
    assert broker.group_offsets == {(TOPICS.outbound, 0): 1}


def test_a_tenant_ledger_stepped_into_by_every_task_is_written_once_a_batch() -> None:
    from processors.core.timeutil import format_rfc3339
    from processors.runtime.gate import recipient_state, tenant_slots
    from processors.runtime.gate.processor import GateProcessor
    from tests.factories import policy_with

    broker = Broker(PARTITIONS)
    loop = route_loop(broker, set(range(PARTITIONS)))
    gate = loop.processor
    assert isinstance(gate, GateProcessor)
    gate.holder.current = policy_with(parameters__messaging_limit=10)
    tasks = loop.tasks
    assert tasks is not None
    gate.attach(lambda n: tasks.tasks[n].store if n in tasks.tasks else None)
    users = {n: numbers_on(n, 2) for n in range(PARTITIONS)}
    template = {"name": "notice", "language": "en_US"}
    loop.process([record for n in range(PARTITIONS) for record in records(
        TOPICS.outbound, n, [message(message_id=f"m{n}-{i}", recipient=user, template=template,
                                     created_at=format_rfc3339(NOW))
                             for i, user in enumerate(users[n])])], NOW)
    assert len(decisions(broker)) == 2 * PARTITIONS
    key = tenant_slots.ledger_key("acme").encode()
    ledgers = [r for r in broker.committed(SETTINGS.changelog_topic) if r.key == key]
    assert len(ledgers) == 1, "one ledger record for the batch, not one per task"
    assert tenant_slots.in_use(tenant_slots.read_ledger(ledgers[0].value))[0] == 2 * PARTITIONS
    for n, numbers in users.items():  # each user's slot is in its own record
        assert all(recipient_state.load(tasks.tasks[n].store, f"acme:{u}").slot == NOW
                   for u in numbers)
