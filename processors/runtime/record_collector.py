"""RecordCollector: output records -> a producer, one batch per topic partition.

aiokafka's send() per record cost more than routing the record did, so outputs are appended to
one batch per (topic, partition) and sent with send_batch. Records without a partition go where
Kafka's default partitioner would put them (murmur2 of the key, as the Java client)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.runtime.routing import Output, partition_for_bytes

Sent = list[tuple[str, "asyncio.Future[Any]", int]]  # (topic, future of the batch, records)


class BatchProducer(Protocol):
    """What the collector needs of a producer (aiokafka's AIOKafkaProducer has it)."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *,
                         partition: int) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


@dataclass
class RecordCollector:
    partition_counts: dict[str, int] = field(default_factory=dict)
    spread: int = 0  # round-robin partition for records without a key

    async def send(self, producer: BatchProducer, out: Sequence[Output]) -> Sent:
        """Hand the outputs to the producer; returns (topic, future, record count) per batch."""
        open_batches: dict[tuple[str, int], tuple[Any, int]] = {}
        sent: Sent = []
        for output in out:
            partition = output.partition
            if partition is None:
                partition = await self.partition_of(producer, output)
            slot = (output.topic, partition)
            batch, count = open_batches.get(slot) or (producer.create_batch(), 0)
            headers = list(output.headers)
            if batch.append(key=output.key, value=output.value, timestamp=None,
                            headers=headers) is None:  # full: send it, start the next one
                sent.append((output.topic, await producer.send_batch(
                    batch, output.topic, partition=partition), count))
                batch, count = producer.create_batch(), 0
                if batch.append(key=output.key, value=output.value, timestamp=None,
                                headers=headers) is None:
                    raise ValueError(f"a record for {output.topic} is larger than a batch")
            open_batches[slot] = (batch, count + 1)
        for (topic, partition), (batch, count) in open_batches.items():
            sent.append((topic, await producer.send_batch(batch, topic, partition=partition),
                         count))
        return sent

    async def partition_of(self, producer: BatchProducer, output: Output) -> int:
        count = self.partition_counts.get(output.topic)
        if count is None:
            count = self.partition_counts[output.topic] = len(
                await producer.partitions_for(output.topic))
        if output.key is None:
            self.spread += 1
            return self.spread % count
        return partition_for_bytes(output.key, count)


def next_offset(sent: Sent, topic: str) -> int:
    """The offset after the last record sent to topic (sent has completed); 0 if none was."""
    last = max((future.result().offset + count - 1 for name, future, count in sent
                if name == topic), default=-1)
    return last + 1
