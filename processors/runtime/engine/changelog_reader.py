"""ChangelogReader: brings partitions' stores up to the committed end of their changelog.

The store keeps a checkpoint (the changelog offset it holds everything before), so a restart
reads only the tail; a changelog shorter than the checkpoint was recreated, and the store is
rebuilt from scratch. The end is the last stable offset (the restore consumer reads
read_committed): a transaction still open is not restored, and RouteLoop.on_assign waits for
the group's committed offsets to be stable before restoring, so a transaction that committed input
offsets has its changelog records below that end.

The partitions of an assignment are restored together, by one consumer assigned all of them:
each fetch carries every partition, and the broker's reads, librdkafka's and the store's writes
overlap instead of taking turns partition by partition."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from processors.runtime import kafka_clients
from processors.runtime.engine import state_store
from processors.runtime.engine.state_store import PartitionStore
from processors.settings import Settings

log = logging.getLogger(__name__)

FLUSH_KEYS = 50_000  # changes held in memory (all partitions together) before they are written
CONSUME_RECORDS = 10_000  # most records taken from the consumer's queue at once
WAIT_SECONDS = 0.05  # longest wait for a fetch when nothing is queued (then positions are read)
STALL_SECONDS = 120.0  # no progress towards the end this long: the restore fails
# librdkafka stops fetching a partition once queued.min.messages are queued and then waits
# fetch.queue.backoff.ms (1,000 by default) before it looks again: restoring 1,000,000 records
# spent 34 of its 43 s idle in that pause. Fetching resumes within a millisecond here, and up to
# 100,000 records (still within queued.max.messages.kbytes) are read ahead of the store.
RESTORE_FETCH = {"fetch.queue.backoff.ms": 1, "queued.min.messages": 100_000}


def restore_consumer(settings: Settings) -> Consumer:
    """kafka_clients' reader options (security, read_committed, bounded prefetch) with the
    restore's own fetch pacing; joins no group and commits nothing (librdkafka wants a group id
    all the same)."""
    return Consumer({**kafka_clients._reader_options(settings, "restore"),
                     "group.id": f"{settings.app_id}-restore", **RESTORE_FETCH})


class RestoreConsumer(Protocol):
    """What restoring needs of a consumer without a group (confluent-kafka's has it)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def unassign(self) -> None: ...

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...


class RestoreStalled(Exception):
    """The changelog could not be read to its end."""


@dataclass
class _Restoring:
    """One partition being restored: from its checkpoint to the end found at the start."""

    store: PartitionStore
    start: int
    end: int
    position: int
    changes: dict[bytes, bytes | None] = field(default_factory=dict)
    applied: int = 0

    def write(self, checkpoint: int) -> None:
        self.applied += len(self.changes)
        self.store.restore(self.changes, checkpoint)
        self.changes = {}


class ChangelogReader:
    def __init__(self, consumer: RestoreConsumer, changelog_topic: str) -> None:
        self.consumer = consumer
        self.topic = changelog_topic

    def restore(self, store: PartitionStore) -> int:
        """Apply the changelog from the store's checkpoint to its end; returns keys applied."""
        return self.restore_all([store])[store.partition]

    def restore_all(self, stores: list[PartitionStore]) -> dict[int, int]:
        """restore() every store, all partitions read at once; returns keys applied per
        partition."""
        consumer = self.consumer
        restoring: dict[int, _Restoring] = {}
        for store in stores:
            _, end = consumer.get_watermark_offsets(TopicPartition(self.topic, store.partition),
                                                    timeout=30, cached=False)
            start = store.checkpoint()
            if start > end:  # the changelog is shorter than what we hold: it was recreated
                log.warning("changelog behind the local state: restoring from scratch",
                            extra={"event": "restore_reset", "partition": store.partition})
                state_store.reset(store)
                start = 0
            if start < end:
                restoring[store.partition] = _Restoring(store, start, end, start)
        if restoring:
            consumer.assign([TopicPartition(self.topic, partition, r.start)
                             for partition, r in restoring.items()])
            try:
                self._read(restoring)
            finally:
                consumer.unassign()
        return {store.partition: restoring[store.partition].applied
                if store.partition in restoring else 0 for store in stores}

    def _read(self, restoring: dict[int, _Restoring]) -> None:
        consumer = self.consumer
        reading = dict(restoring)  # the partitions not at their end yet
        pending = 0  # changes held, all partitions
        progressed = time.monotonic()
        while reading:
            # What has arrived; only when nothing has, a short wait for the next fetch (a
            # long one was spent in full at each partition's tail, where what is left of the
            # offsets are transaction markers, not records).
            messages = consumer.consume(CONSUME_RECORDS, 0)
            if not messages:
                messages = consumer.consume(1, WAIT_SECONDS)
            for message in messages:
                if message.error() is not None:
                    raise RestoreStalled(f"changelog {self.topic}: {message.error()}")
                partition = reading.get(message.partition())
                if partition is not None and message.offset() < partition.end \
                        and message.key() is not None:
                    partition.changes[message.key()] = message.value()
                    pending += 1
            # The position moves past transaction markers and aborted records too.
            for tp in consumer.position([TopicPartition(self.topic, p) for p in reading]):
                partition = reading[tp.partition]
                if tp.offset > partition.position:
                    partition.position, progressed = tp.offset, time.monotonic()
                if partition.position >= partition.end:
                    pending -= len(partition.changes)
                    self._finish(reading.pop(tp.partition))
            if reading and time.monotonic() - progressed > STALL_SECONDS:
                stuck = ", ".join(f"{p} at {r.position} of {r.end}" for p, r in reading.items())
                raise RestoreStalled(f"changelog {self.topic} stuck: partition {stuck}")
            if pending >= FLUSH_KEYS:  # keeps the memory bounded; each store's own checkpoint
                for partition in reading.values():
                    partition.write(min(partition.position, partition.end))
                pending = 0

    def _finish(self, partition: _Restoring) -> None:
        partition.write(partition.end)
        partition.store.restored()
        log.info("state restored", extra={"event": "restore",
                                          "partition": partition.store.partition,
                                          "from": partition.start, "to": partition.end,
                                          "keys": partition.applied})
