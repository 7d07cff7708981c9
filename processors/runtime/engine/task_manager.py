"""TaskManager: the tasks this worker holds, opened and closed as partitions move.

Opening a task opens its partition's store and restores it from the changelog; closing one
closes the store. Nothing is pending between batches (stream_thread.RouteLoop commits or
aborts each batch before it polls again), so a closed task leaves nothing behind: whatever was not
committed is the new owner's to redo."""

from __future__ import annotations

import time
from collections.abc import Callable

from processors.runtime.engine.changelog_reader import ChangelogReader
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.engine.task import StreamTask

StoreOpener = Callable[[int], PartitionStore]


class TaskManager:
    def __init__(self, open_store: StoreOpener, reader: ChangelogReader) -> None:
        self.open_store = open_store
        self.reader = reader
        self.tasks: dict[int, StreamTask] = {}

    def assign(self, numbers: set[int]) -> float:
        """Hold exactly these partition numbers; returns the seconds spent restoring."""
        for number in sorted(set(self.tasks) - numbers):
            self.close(number)
        started = time.monotonic()
        # The new partitions' stores restored together (ChangelogReader.restore_all).
        stores: list[PartitionStore] = []
        try:
            for number in sorted(numbers - set(self.tasks)):
                stores.append(self.open_store(number))
            self.reader.restore_all(stores)
        except BaseException:
            for store in stores:
                store.close()
            raise
        for store in stores:
            self.tasks[store.partition] = StreamTask(store.partition, store)
        return time.monotonic() - started

    def close(self, number: int) -> None:
        self.tasks.pop(number).store.close()

    def close_all(self) -> None:
        for number in list(self.tasks):
            self.close(number)
