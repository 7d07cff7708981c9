"""The notifier's loop (processors.tools.notifier.Notifier) with fake Kafka clients: a stop asked
for (SIGINT, SIGTERM) ends it at the next poll or back-off step, and what it had not settled
stays unsettled and uncommitted, to be sent again after a restart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import TopicPartition

from processors.tools.notifier import Notifier, Settler
from processors.tools.notify import Answer, RetryPolicy
from tests.unit.tools.test_notify import rejection

TOPIC = "outbound.messages.rejected"
PART = TopicPartition(TOPIC, 0)


@dataclass
class Record:
    offset: int
    value: bytes
    topic: str = TOPIC
    partition: int = 0
    key: bytes | None = b"acme:+15550100000"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None]] = field(default_factory=list)
    committed_offsets: list[int] = field(default_factory=list)
    open: bool = False

    def begin_transaction(self) -> None:
        assert not self.open
        self.open = True

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        assert self.open
        self.sent.append((topic, key))

    def send_offsets_to_transaction(self, offsets: dict[Any, Any], _: Any) -> None:
        self.committed_offsets += [o.offset for o in offsets.values()]

    def commit_transaction(self) -> None:
        assert self.open
        self.open = False


@dataclass
class FakeConsumer:
    """Hands out the batches in order, then nothing; on_poll(paused) runs at every poll."""

    batches: list[list[Record]]
    on_poll: Callable[[bool], None]
    paused: tuple[TopicPartition, ...] = ()
    polls: int = 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None
             ) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        assert self.polls < 1_000, "the notifier kept polling after it was asked to stop"
        self.on_poll(bool(self.paused))
        if self.paused or not self.batches:
            return {}
        return {PART: self.batches.pop(0)}

    def assignment(self) -> set[TopicPartition]:
        return {PART}

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused = partitions

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused = ()

    def group_metadata(self) -> object:
        return object()


def notifier(consumer: FakeConsumer, send: Callable[[dict[str, Any]], Answer]
             ) -> tuple[Notifier, FakeProducer]:
    producer = FakeProducer()
    settler = Settler(producer, consumer, "settled", "dlq",
                      commit_every=1)
    return Notifier(consumer, settler, send,
                    RetryPolicy(first=0.01, cap=0.01, give_up_after=60), {},
                    rand=lambda: 1.0), producer


def records(*message_ids: str) -> list[Record]:
    return [Record(offset, orjson.dumps(rejection(message_id, "MARKETING_OPTED_OUT")))
            for offset, message_id in enumerate(message_ids)]


def test_a_stop_during_a_back_off_leaves_the_notification_unsettled() -> None:
    posted: list[str] = []

    def send(notification: dict[str, Any]) -> Answer:
        posted.append(notification["idempotency_key"])
        return Answer(200 if len(posted) == 1 else 503)

    consumer = FakeConsumer([records("a", "b")], on_poll=lambda paused: None)
    loop, producer = notifier(consumer, send)
    # The second notification is refused with a 503; during its back-off, the stop.
    consumer.on_poll = lambda paused: loop.stop() if paused else None

    loop.run(once=False)

    assert len(posted) == 2  # a delivered, b tried once
    assert loop.counts.delivered == 1 and loop.counts.dead_lettered == 0
    assert [topic for topic, _ in producer.sent] == ["settled"]  # a's settlement only
    assert producer.committed_offsets == [1]  # b (offset 1) is read again after a restart
    assert not producer.open and consumer.paused == ()


def test_a_stop_ends_the_batch_in_hand_and_the_loop() -> None:
    posted: list[str] = []
    consumer = FakeConsumer([records("a", "b", "c")], on_poll=lambda paused: None)

    def send(notification: dict[str, Any]) -> Answer:
        posted.append(notification["idempotency_key"])
        loop.stop()  # asked for while the first POST is under way
        return Answer(200)

    loop, producer = notifier(consumer, send)

    loop.run(once=False)

    assert len(posted) == 1 and loop.counts.delivered == 1
    assert producer.committed_offsets == [1]  # b and c unread as far as the group knows
    assert consumer.polls == 1  # no poll after the stop


def test_an_idle_notifier_stops_at_its_next_poll() -> None:
    consumer = FakeConsumer([], on_poll=lambda paused: None)
    loop, producer = notifier(consumer, lambda n: Answer(200))
    consumer.on_poll = lambda paused: loop.stop() if consumer.polls == 3 else None

    loop.run(once=False)

    assert consumer.polls == 3 and producer.sent == []
