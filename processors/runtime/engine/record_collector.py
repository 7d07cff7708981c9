"""RecordCollector: a batch's output records -> the producer, and what became of them.

librdkafka batches, compresses and partitions in C, so outputs go to produce() one by one
(about a microsecond each); keyed records without a partition go where the Java client would put
them (the producer's murmur2 partitioner). The producer reports each delivery to delivered():
the collector keeps the first failure (the batch must not commit) and, per changelog partition,
the offset after the last record written there (the store's next checkpoint)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from processors.runtime.engine.records import Output

FLUSH_SECONDS = 30.0  # longest wait for a batch's deliveries before it is given up


class DeliveryFailed(Exception):
    """An output record was not written: its batch must not commit."""


class RecordProducer(Protocol):
    """What the collector needs of a producer (confluent-kafka's Producer has it)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, on_delivery: Callable[..., Any] | None = None,
                timestamp: int = 0, headers: Any = None) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...


class RecordCollector:
    def __init__(self, changelog_topic: str) -> None:
        self.changelog = changelog_topic
        self.changelog_ends: dict[int, int] = {}  # changelog partition -> next offset
        self.failure: str | None = None

    def send(self, producer: RecordProducer, out: Sequence[Output]) -> None:
        for output in out:
            partition = -1 if output.partition is None else output.partition
            headers = list(output.headers) or None
            while True:
                try:
                    producer.produce(output.topic, output.value, output.key, partition,
                                     headers=headers)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)

    def delivered(self, error: Any, message: Any) -> None:
        """The producer's delivery report (called on the thread that flushes or polls)."""
        if error is not None:
            if self.failure is None:
                self.failure = f"{message.topic()}: {error}"
        elif message.topic() == self.changelog:
            partition, after = message.partition(), message.offset() + 1
            if after > self.changelog_ends.get(partition, 0):
                self.changelog_ends[partition] = after

    def flush(self, producer: RecordProducer) -> dict[int, int]:
        """Wait for every record sent; returns the changelog ends and starts the next batch.
        Raises DeliveryFailed if one was not written."""
        left = producer.flush(FLUSH_SECONDS)
        ends, failure = self.changelog_ends, self.failure
        self.reset()
        if failure is not None:
            raise DeliveryFailed(failure)
        if left:
            raise DeliveryFailed(f"{left} records not acknowledged after {FLUSH_SECONDS:.0f} s")
        return ends

    def reset(self) -> None:
        self.changelog_ends, self.failure = {}, None
