"""One partition's recipient state: a local store that only ever holds committed state.

Every change is written twice: to the partition's changelog topic, inside the Kafka transaction
that also commits the input offsets, and to the local store once that transaction has committed.
Until then changes live in an overlay that reads see first and an abort throws away, so a crash
at any point leaves the local store equal to a prefix of the committed changelog. The store
remembers how far into the changelog it is (the checkpoint); a restarted worker replays only
the changelog after it. The memory store has no checkpoint and replays the whole changelog.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol, cast

from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

CHECKPOINT = b"\x00checkpoint"  # sorts before every "tenant:+E164" key


class Backend(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def write(self, changes: dict[bytes, bytes | None], checkpoint: int,
              logged: bool = True) -> None: ...
    def persist(self) -> None: ...
    def items(self) -> list[tuple[bytes, bytes]]: ...
    def checkpoint(self) -> int: ...
    def close(self) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.offset = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int,
              logged: bool = True) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.offset = max(self.offset, checkpoint)

    def persist(self) -> None:
        pass

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())

    def checkpoint(self) -> int:
        return self.offset

    def close(self) -> None:
        self.data.clear()


_BLOCK_CACHE: list[Cache] = []  # one block cache for every partition's database
_UNLOGGED = WriteOptions()  # a restore's writes: without the write-ahead log (RocksBackend)
# rocksdict's stubs declare a method; it is a property (calling it raises TypeError).
_UNLOGGED.disable_wal = True  # type: ignore[method-assign, assignment]


def rocks_options() -> Options:
    """RocksDB's defaults (64 MB memtables, a cache per database) cost a worker with eight
    partitions ~470 MB at 1,000,000 decisions; small memtables and one shared 32 MB block cache
    keep it bounded (state values are ~100 bytes)."""
    options = Options(raw_mode=True)
    options.set_write_buffer_size(4 << 20)
    options.set_max_write_buffer_number(2)
    if not _BLOCK_CACHE:
        _BLOCK_CACHE.append(Cache(32 << 20))
    table = BlockBasedOptions()
    table.set_block_cache(_BLOCK_CACHE[0])
    # Most reads of a new recipient find nothing: without a filter each one searched every
    # table file (~4 us); a 10-bit bloom filter (~1% false positives, ~1.3 bytes a key)
    # answers most of them from memory (~1.3 us).
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


class _RocksReads:
    """Reads shared by the worker's store and the query server's secondary view of it."""

    db: Rdict

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def items(self) -> list[tuple[bytes, bytes]]:
        # raw mode: keys and values are bytes (rocksdict's stubs say any of its types)
        return [(cast(bytes, k), cast(bytes, v)) for k, v in self.db.items() if k != CHECKPOINT]

    def checkpoint(self) -> int:
        raw = self.db.get(CHECKPOINT)
        return int(raw) if raw else 0

    def close(self) -> None:
        self.db.close()


class RocksBackend(_RocksReads):
    """rocksdict in raw mode; the checkpoint is written in the same batch as the changes.

    A restore writes without RocksDB's write-ahead log (logged=False; a bulk load's usual
    setting) and persist()s at its end. Unlogged batches that were not flushed are lost in a
    crash, but whole and in order (a batch lands in one memtable, memtables are flushed in
    order): what is left is still a prefix of the changelog with its checkpoint. persist()
    before any logged write keeps that true afterwards, and puts the restored state in table
    files, where the query server's secondary instance reads it (it replays only the log)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), options=rocks_options())

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int,
              logged: bool = True) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT, str(checkpoint).encode())
        self.db.write(batch, None if logged else _UNLOGGED)

    def persist(self) -> None:
        self.db.flush(True)

    def wipe(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.db = Rdict(str(self.path), options=rocks_options())


class SecondaryBackend(_RocksReads):
    """A read-only view of another process's RocksBackend (a RocksDB secondary instance): it
    sees what the primary had written when it opened, then what catch_up() reads of the
    primary's log since. The primary writes committed state only (pending changes are in
    PartitionStore's overlay), so this is committed state too."""

    def __init__(self, primary: Path, secondary: Path) -> None:
        secondary.mkdir(parents=True, exist_ok=True)
        options = rocks_options()
        options.set_max_open_files(-1)  # RocksDB requires it of a secondary instance
        # With every table file open, each catch-up loaded table handlers on 16 new threads:
        # 1.6 ms per call; with one, 25 us when nothing changed, ~50 us after a batch.
        options.set_max_file_opening_threads(1)
        # Each catch-up writes a line to the secondary's own info log: keep that bounded.
        options.set_max_log_file_size(1 << 20)
        options.set_keep_log_file_num(2)
        self.db = Rdict(str(primary), options=options,
                        access_type=AccessType.secondary(str(secondary)))

    def catch_up(self) -> None:
        self.db.try_catch_up_with_primary()

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int,
              logged: bool = True) -> None:
        raise TypeError("a secondary store is read-only")

    def persist(self) -> None:
        raise TypeError("a secondary store is read-only")


class PartitionStore:
    """Committed state plus the pending changes of the open transaction."""

    def __init__(self, partition: int, backend: Backend) -> None:
        self.partition = partition
        self.backend = backend
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.backend.get(key)

    def get_committed(self, key: bytes) -> bytes | None:
        """Without the open batch's changes (for readers on other threads: checks)."""
        return self.backend.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value

    def committed(self, changelog_next_offset: int) -> None:
        """The transaction with the pending changes committed: keep them."""
        self.backend.write(self.pending, changelog_next_offset)
        self.pending = {}

    def aborted(self) -> None:
        self.pending = {}

    def restore(self, changes: dict[bytes, bytes | None], next_offset: int) -> None:
        """Part of a restore (unlogged: see RocksBackend); restored() when it is done."""
        self.backend.write(changes, next_offset, logged=False)

    def restored(self) -> None:
        """The restore is complete: its writes on disk, before the store is used."""
        self.backend.persist()

    def items(self) -> list[tuple[bytes, bytes]]:
        return self.backend.items()

    def checkpoint(self) -> int:
        return self.backend.checkpoint()

    def close(self) -> None:
        self.pending = {}
        self.backend.close()


def rocks_path(data_dir: Path, partition: int) -> Path:
    """Where a partition's RocksDB store lives (the query server opens it as a secondary)."""
    return data_dir / f"recipient-state-{partition}"


def open_store(scheme: str, data_dir: Path, partition: int) -> PartitionStore:
    if scheme == "memory":
        return PartitionStore(partition, MemoryBackend())
    return PartitionStore(partition, RocksBackend(rocks_path(data_dir, partition)))


def reset(store: PartitionStore) -> None:
    """Forget everything (the changelog is shorter than the checkpoint: it was recreated)."""
    if isinstance(store.backend, RocksBackend):
        store.backend.wipe()
    else:
        store.backend = MemoryBackend()
