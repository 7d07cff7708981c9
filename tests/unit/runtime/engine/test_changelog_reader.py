"""Restore from the changelog: only the tail after the checkpoint; from scratch when the
changelog was recreated; never an uncommitted record."""

from __future__ import annotations

from pathlib import Path

from processors.runtime.engine.changelog_reader import ChangelogReader
from processors.runtime.engine.state_store import (
    MemoryBackend,
    PartitionStore,
    RocksBackend,
    SecondaryBackend,
)
from tests.unit.runtime.fakes import Broker, FakeRestoreConsumer, Stored

CHANGELOG = "app-recipient-state-changelog"


def changelog(broker: Broker, *records: tuple[bytes, bytes | None], committed: bool = True
              ) -> None:
    log = broker.logs[(CHANGELOG, 1)]
    for key, value in records:
        log.append(Stored(len(log), key, value, committed))


def test_restore_reads_only_the_tail_after_the_checkpoint() -> None:
    broker = Broker()
    changelog(broker, (b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", None))
    store = PartitionStore(1, MemoryBackend())
    store.restore({b"a": b"1", b"b": b"1"}, 2)  # what it held before: offsets 0 and 1
    applied = ChangelogReader(FakeRestoreConsumer(broker), CHANGELOG).restore(store)
    assert applied == 3  # a, c and b's deletion; not the two records it had
    assert dict(store.items()) == {b"a": b"2", b"c": b"1"}
    assert store.checkpoint() == 5


def test_restore_stops_at_the_last_stable_offset() -> None:
    broker = Broker()
    changelog(broker, (b"a", b"1"))
    changelog(broker, (b"a", b"open"), committed=False)  # a transaction still open
    store = PartitionStore(1, MemoryBackend())
    ChangelogReader(FakeRestoreConsumer(broker), CHANGELOG).restore(store)
    assert dict(store.items()) == {b"a": b"1"} and store.checkpoint() == 1


def test_a_recreated_changelog_rebuilds_the_store_from_scratch() -> None:
    broker = Broker()
    changelog(broker, (b"new", b"1"))
    store = PartitionStore(1, MemoryBackend())
    store.restore({b"old": b"1"}, 10)  # checkpoint past the changelog's end
    ChangelogReader(FakeRestoreConsumer(broker), CHANGELOG).restore(store)
    assert dict(store.items()) == {b"new": b"1"} and store.checkpoint() == 1


def test_partitions_restored_together_each_to_its_own_end_and_checkpoint() -> None:
    broker = Broker()
    for partition in (0, 2, 3):
        log = broker.logs[(CHANGELOG, partition)]
        for index in range(partition * 3):
            log.append(Stored(len(log), f"k{partition}-{index % 4}".encode(), b"v", True))
    stores = [PartitionStore(partition, MemoryBackend()) for partition in (0, 2, 3)]
    stores[2].restore({b"k3-0": b"old"}, 4)  # partition 3 holds its first four offsets
    # Two records per partition and poll: the partitions' records arrive interleaved.
    applied = ChangelogReader(FakeRestoreConsumer(broker), CHANGELOG).restore_all(stores)
    assert applied == {0: 0, 2: 4, 3: 4}  # keys changed after each checkpoint
    assert [store.checkpoint() for store in stores] == [0, 6, 9]
    assert dict(stores[1].items()) == {b"k2-0": b"v", b"k2-1": b"v", b"k2-2": b"v",
                                       b"k2-3": b"v"}
    assert dict(stores[2].items())[b"k3-0"] == b"v"  # offset 8 is k3-0 again


def test_a_rocksdb_restore_is_on_disk_for_the_query_servers_secondary(tmp_path: Path) -> None:
    """Restored without the write-ahead log, the state must still reach a secondary instance
    (it reads table files and the log, never the primary's memtables) and a reopened store."""
    broker = Broker()
    changelog(broker, *[(f"k{i}".encode(), b"v") for i in range(100)])
    store = PartitionStore(1, RocksBackend(tmp_path / "p1"))
    ChangelogReader(FakeRestoreConsumer(broker, per_poll=7), CHANGELOG).restore(store)
    secondary = SecondaryBackend(tmp_path / "p1", tmp_path / "p1-secondary")
    try:
        assert len(secondary.items()) == 100 and secondary.checkpoint() == 100
    finally:
        secondary.close()
    store.close()
    reopened = RocksBackend(tmp_path / "p1")
    try:
        assert len(reopened.items()) == 100 and reopened.checkpoint() == 100
    finally:
        reopened.close()
