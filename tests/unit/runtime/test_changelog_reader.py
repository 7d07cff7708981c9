"""Restore from the changelog: only the tail after the checkpoint; from scratch when the
changelog was recreated; never an uncommitted record."""

from __future__ import annotations

from processors.runtime.changelog_reader import ChangelogReader
from processors.runtime.state_store import MemoryBackend, PartitionStore
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
