"""ChangelogReader: brings a partition's store up to the committed end of its changelog.

The store keeps a checkpoint (the changelog offset it holds everything before), so a restart
reads only the tail; a changelog shorter than the checkpoint was recreated, and the store is
rebuilt from scratch."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiokafka import TopicPartition

from processors.runtime import state_store
from processors.runtime.state_store import PartitionStore

log = logging.getLogger(__name__)

FLUSH_KEYS = 50_000  # changes held in memory before they are written to the store


class RestoreConsumer(Protocol):
    """What restoring needs of a consumer without a group (aiokafka's has it)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]: ...


class ChangelogReader:
    def __init__(self, consumer: RestoreConsumer, changelog_topic: str) -> None:
        self.consumer = consumer
        self.topic = changelog_topic

    async def restore(self, store: PartitionStore) -> int:
        """Apply the changelog from the store's checkpoint to its end; returns keys applied."""
        consumer = self.consumer
        tp = TopicPartition(self.topic, store.partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
        start = store.checkpoint()
        if start > end:  # the changelog is shorter than what we hold: it was recreated
            log.warning("changelog behind the local state: restoring from scratch",
                        extra={"event": "restore_reset", "partition": store.partition})
            state_store.reset(store)
            start = 0
        if start >= end:
            return 0
        consumer.seek(tp, start)
        changes: dict[bytes, bytes | None] = {}
        applied = 0
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in fetched.get(tp, ()):
                if record.offset < end and record.key is not None:
                    changes[record.key] = record.value
            if len(changes) >= FLUSH_KEYS:
                applied += len(changes)
                store.restore(changes, await consumer.position(tp))
                changes = {}
        applied += len(changes)
        store.restore(changes, end)
        log.info("state restored", extra={"event": "restore", "partition": store.partition,
                                          "from": start, "to": end, "keys": applied})
        return applied
