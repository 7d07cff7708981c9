"""StreamTask: what a worker holds for one partition number, and the commit of its batches.

A task owns partition p of every input topic (co-partitioning), the recipient state of p and,
exactly-once, a transactional producer `<app id>-route-<p>`: a new owner of p fences the
previous one and aborts its open transaction. One batch is one transaction: the outputs the
router made (decisions, dead letters, re-keyed records, changelog records) and the input
offsets. The store keeps the batch's changes pending until the transaction commits.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from processors.runtime.record_collector import BatchProducer, RecordCollector, next_offset
from processors.runtime.routing import Output, Record, Router, Tally
from processors.runtime.state_store import PartitionStore


class TransactionalProducer(BatchProducer, Protocol):
    async def begin_transaction(self) -> None: ...

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int],
                                          group_id: str) -> None: ...

    async def commit_transaction(self) -> None: ...

    async def stop(self) -> None: ...


Offsets = dict[TopicPartition, int]
# at-least-once: commits the input offsets once the outputs are acknowledged
CommitOffsets = Callable[[Offsets], Awaitable[None]]


@dataclass
class StreamTask:
    partition: int
    store: PartitionStore
    changelog_topic: str
    collector: RecordCollector = field(default_factory=RecordCollector)
    producer: TransactionalProducer | None = None  # exactly-once: this task's own
    failed: bool = False  # the last transaction failed: a fresh producer before the next

    def process(self, router: Router, records: Sequence[Record], now: float) -> tuple[
            list[Output], Tally]:
        """Route a batch; the store holds the changes pending until commit() or abort()."""
        out: list[Output] = []
        tally: Tally = Counter()
        try:
            for record in records:
                router.handle(record, self.store, out, tally, now)
            router.flush(out)  # the batch's state changes, staged once per recipient
        except BaseException:
            router.forget()
            raise
        return out, tally

    async def commit(self, out: Sequence[Output], offsets: Offsets, group_id: str,
                     shared: BatchProducer | None = None,
                     commit_offsets: CommitOffsets | None = None) -> None:
        """One transaction (exactly-once), or outputs acknowledged then offsets committed
        (at-least-once, with the shared producer). Raises if it did not commit."""
        if self.producer is not None:
            producer = self.producer
            await producer.begin_transaction()
            sent = await self.collector.send(producer, out)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, group_id)
            await producer.commit_transaction()
        else:
            assert shared is not None and commit_offsets is not None
            sent = await self.collector.send(shared, out)
            await asyncio.gather(*(future for _, future, _ in sent))
            if offsets:
                await commit_offsets(offsets)
        # The changelog's next offset after this batch: the store's new checkpoint.
        self.store.committed(max(next_offset(sent, self.changelog_topic),
                                 self.store.checkpoint()))

    def abort(self) -> None:
        """The transaction did not commit: forget the batch's changes; repair before the next."""
        self.store.aborted()
        self.failed = True


def first_offsets(batches: dict[TopicPartition, list[Any]]) -> Offsets:
    """Where to read a batch again after it was aborted."""
    return {tp: records[0].offset for tp, records in batches.items() if records}


def next_offsets(batches: dict[TopicPartition, list[Any]]) -> Offsets:
    """The input offsets a committed batch stores."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
