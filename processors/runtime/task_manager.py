"""TaskManager: the tasks this worker holds, opened and closed as partitions move.

Opening a task opens its partition's store, restores it from the changelog and, exactly-once,
starts its transactional producer (which fences the partition's previous owner). Closing one
stops the producer and closes the store: whatever was not committed is the new owner's to
redo."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from processors.runtime.changelog_reader import ChangelogReader
from processors.runtime.state_store import PartitionStore
from processors.runtime.task import StreamTask, TransactionalProducer

log = logging.getLogger(__name__)

StoreOpener = Callable[[int], PartitionStore]
ProducerStarter = Callable[[int], Awaitable[TransactionalProducer]]


class TaskManager:
    def __init__(self, open_store: StoreOpener, reader: ChangelogReader, changelog_topic: str,
                 start_producer: ProducerStarter | None) -> None:
        """start_producer: None at-least-once (the tasks share the thread's producer)."""
        self.open_store = open_store
        self.reader = reader
        self.changelog_topic = changelog_topic
        self.start_producer = start_producer
        self.tasks: dict[int, StreamTask] = {}

    async def assign(self, numbers: set[int]) -> float:
        """Hold exactly these partition numbers; returns the seconds spent restoring."""
        for number in sorted(set(self.tasks) - numbers):
            await self.close(number)
        started = time.monotonic()
        for number in sorted(numbers - set(self.tasks)):
            self.tasks[number] = await self.open(number)
        return time.monotonic() - started

    async def open(self, number: int) -> StreamTask:
        store = self.open_store(number)
        await self.reader.restore(store)
        task = StreamTask(number, store, self.changelog_topic)
        if self.start_producer is not None:
            task.producer = await self.start_producer(number)
        return task

    async def close(self, number: int) -> None:
        task = self.tasks.pop(number)
        if task.producer is not None:
            await stop_quietly(task.producer)
        task.store.close()

    async def close_all(self) -> None:
        for number in list(self.tasks):
            await self.close(number)

    async def repair(self, task: StreamTask) -> None:
        """After a failed transaction: a fresh producer (the old one may be fenced or stuck)."""
        if task.producer is not None and self.start_producer is not None:
            await stop_quietly(task.producer)
            task.producer = None
            task.producer = await self.start_producer(task.partition)
        task.failed = False


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_quietly(client: Stoppable) -> None:
    try:
        await asyncio.wait_for(client.stop(), timeout=10)
    except Exception as exc:  # already broken: nothing more to do with it
        log.info("client stop failed: %s", type(exc).__name__)
