"""StreamTask: what a worker holds for one partition number.

A task owns partition p of every input topic (co-partitioning) and the recipient state of p.
It routes its share of a batch; the store keeps the batch's changes pending until the batch's
transaction (stream_thread.RouteLoop's, one for all its tasks) commits or aborts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processors.runtime.routing import Output, Record, Router, Tally
from processors.runtime.state_store import PartitionStore

# (topic, partition) -> offset
Offsets = dict[tuple[str, int], int]


@dataclass
class StreamTask:
    partition: int
    store: PartitionStore

    def process(self, router: Router, records: Sequence[Record], now: float) -> tuple[
            list[Output], Tally]:
        """Route the task's share of a batch. The changes wait in the router until the caller's
        router.flush() (once for every task of the transaction: a tenant's messaging-limit
        ledger that several tasks stepped into is written once); the store then holds them
        pending until committed() or abort()."""
        out: list[Output] = []
        tally: Tally = Counter()
        try:
            for record in records:
                router.handle(record, self.store, out, tally, now)
        except BaseException:
            router.forget()
            raise
        return out, tally

    def committed(self, changelog_ends: dict[int, int]) -> None:
        """The batch's transaction committed: its changes are the store's, and the checkpoint
        follows the changelog records written for this partition."""
        self.store.committed(max(changelog_ends.get(self.partition, 0),
                                 self.store.checkpoint()))

    def abort(self) -> None:
        """The transaction did not commit: forget the batch's changes."""
        self.store.aborted()


def first_offsets(records: Iterable[Any]) -> Offsets:
    """Where to read a batch again after it was aborted (records in offset order per
    partition, as consumed)."""
    first: Offsets = {}
    for record in records:
        first.setdefault((record.topic, record.partition), record.offset)
    return first


def next_offsets(records: Iterable[Any]) -> Offsets:
    """The input offsets a committed batch stores."""
    return {(record.topic, record.partition): record.offset + 1 for record in records}
