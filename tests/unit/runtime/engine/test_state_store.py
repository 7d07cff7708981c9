"""A partition's store: pending changes until commit, a checkpoint that survives a restart."""

from __future__ import annotations

from pathlib import Path

from processors.runtime.engine.state_store import (
    MemoryBackend,
    PartitionStore,
    RocksBackend,
    open_store,
    reset,
)


def test_pending_changes_are_seen_then_dropped_on_abort() -> None:
    store = PartitionStore(0, MemoryBackend())
    store.put(b"k", b"v1")
    assert store.get(b"k") == b"v1"  # the batch sees its own changes
    store.aborted()
    assert store.get(b"k") is None and store.checkpoint() == 0


def test_commit_keeps_changes_and_moves_the_checkpoint() -> None:
    store = PartitionStore(0, MemoryBackend())
    store.put(b"k", b"v1")
    store.committed(7)
    store.put(b"k", None)  # a deletion, pending
    assert store.backend.get(b"k") == b"v1" and store.get(b"k") is None
    store.committed(9)
    assert store.get(b"k") is None and store.checkpoint() == 9 and store.items() == []


def test_rocksdb_store_keeps_state_and_checkpoint_across_a_restart(tmp_path: Path) -> None:
    store = open_store("rocksdb", tmp_path, 3)
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    store.committed(42)
    store.put(b"c", b"uncommitted")  # a crash before the commit: never on disk
    store.close()
    again = open_store("rocksdb", tmp_path, 3)
    assert isinstance(again.backend, RocksBackend)
    assert again.checkpoint() == 42
    assert sorted(again.items()) == [(b"a", b"1"), (b"b", b"2")]
    reset(again)
    assert again.items() == [] and again.checkpoint() == 0
    again.close()
