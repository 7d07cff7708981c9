"""The contract between the engine and what it runs: a Processor gets each consumed record
with its partition's store, returns records to produce, and hears when batches end and
partitions move. The engine (stream thread, tasks, changelog reader, state stores, record
collector) knows nothing else of it; the gate's processor is processors.runtime.gate.

Every call comes from the stream thread, one batch at a time:

    for each task's records: handle(record, store, out, tally, now)   -> out
    flush(out)        the batch's state changes, staged in the stores, and their changelog
                      records among the outputs (the same transaction); or forget() when the
                      batch will not commit
    counted(tally)    the transaction committed: count what the batch did
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from processors.runtime.engine.records import Output, Record, Tally
from processors.runtime.engine.state_store import PartitionStore

# partition -> this worker's store for it, or None when the partition is not held here
LocalStores = Callable[[int], PartitionStore | None]


class Processor(Protocol):
    @property
    def sources(self) -> list[str]:
        """The topics the engine subscribes to (co-partitioned: same partition counts)."""

    def attach(self, local: LocalStores) -> None:
        """The stores of the partitions this worker holds, for a processor that steps into
        another of its partitions in the same transaction."""

    def handle(self, record: Record, store: PartitionStore, out: list[Output], tally: Tally,
               now: float) -> None:
        """One record of the store's partition; what to produce goes in out. now: the batch's
        clock."""

    def flush(self, out: list[Output]) -> None:
        """The batch is over and will be committed: stage its state changes."""

    def forget(self) -> None:
        """The batch will not commit: drop what it read and changed."""

    def counted(self, tally: Tally) -> None:
        """The batch's transaction committed."""

    def released(self, partitions: set[int]) -> None:
        """These partitions leave this worker."""

    def sweep(self, store: PartitionStore, now: float) -> Iterator[list[Output]]:
        """Expired state of a partition: changes to write (their changelog records), a chunk
        at a time; the engine commits each chunk before it asks for the next."""

    def committed_reader(self, store: PartitionStore) -> Callable[[str], Any]:
        """A partition's committed state by key, readable from any thread (the check API)."""


class LoopMetrics(Protocol):
    """The metric families the stream thread updates (prometheus_client's)."""

    transactions: Any
    batch_records: Any
    batch_phase: Any
    rebalances: Any
    input_lag: Any
