"""ChangelogReader: brings a partition's store up to the committed end of its changelog.

The store keeps a checkpoint (the changelog offset it holds everything before), so a restart
reads only the tail; a changelog shorter than the checkpoint was recreated, and the store is
rebuilt from scratch. The end is the last stable offset (the restore consumer reads
read_committed): a transaction still open is not restored, and the StreamThread waits for the
group's committed offsets to be stable before restoring, so a transaction that committed input
offsets has its changelog records below that end."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from processors.runtime import state_store
from processors.runtime.state_store import PartitionStore

log = logging.getLogger(__name__)

FLUSH_KEYS = 50_000  # changes held in memory before they are written to the store
STALL_SECONDS = 120.0  # no progress towards the end this long: the restore fails


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


class ChangelogReader:
    def __init__(self, consumer: RestoreConsumer, changelog_topic: str) -> None:
        self.consumer = consumer
        self.topic = changelog_topic

    def restore(self, store: PartitionStore) -> int:
        """Apply the changelog from the store's checkpoint to its end; returns keys applied."""
        consumer = self.consumer
        partition = store.partition
        _, end = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                timeout=30, cached=False)
        start = store.checkpoint()
        if start > end:  # the changelog is shorter than what we hold: it was recreated
            log.warning("changelog behind the local state: restoring from scratch",
                        extra={"event": "restore_reset", "partition": partition})
            state_store.reset(store)
            start = 0
        if start >= end:
            return 0
        consumer.assign([TopicPartition(self.topic, partition, start)])
        try:
            applied = self._read(store, start, end)
        finally:
            consumer.unassign()
        log.info("state restored", extra={"event": "restore", "partition": partition,
                                          "from": start, "to": end, "keys": applied})
        return applied

    def _read(self, store: PartitionStore, start: int, end: int) -> int:
        consumer = self.consumer
        changes: dict[bytes, bytes | None] = {}
        applied, position = 0, start
        progressed = time.monotonic()
        while position < end:
            for message in consumer.consume(10_000, 0.5):
                if message.error() is not None:
                    raise RestoreStalled(f"changelog partition {store.partition}: "
                                         f"{message.error()}")
                if message.offset() < end and message.key() is not None:
                    changes[message.key()] = message.value()
            # The position moves past transaction markers and aborted records too.
            now_at = consumer.position([TopicPartition(self.topic, store.partition)])[0].offset
            if now_at > position:
                position, progressed = now_at, time.monotonic()
            elif time.monotonic() - progressed > STALL_SECONDS:
                raise RestoreStalled(f"changelog partition {store.partition} stuck at "
                                     f"{position} of {end}")
            if len(changes) >= FLUSH_KEYS:
                applied += len(changes)
                store.restore(changes, min(position, end))
                changes = {}
        applied += len(changes)
        store.restore(changes, end)
        return applied
