"""processors.runtime.gc_pauses: full collections freeze their survivors; a sweep collects
what the frozen set held."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from processors.runtime import gc_pauses


@pytest.fixture
def frozen_after_full_collections() -> Iterator[None]:
    gc.collect()
    gc_pauses.install()
    yield
    gc.callbacks.remove(gc_pauses._freeze_survivors)
    gc.unfreeze()
    gc.collect()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first


def test_full_collections_freeze_their_survivors_and_sweeps_collect_frozen_garbage(
        frozen_after_full_collections: None) -> None:
    gc_pauses.install()  # idempotent
    assert gc.callbacks.count(gc_pauses._freeze_survivors) == 1 and gc_pauses.installed()
    kept = cycle()
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert gc.is_tracked(kept) and gc.collect(2) == 0  # the frozen set is not walked

    del kept  # garbage now, but frozen: only a sweep finds it
    assert gc.collect() == 0
    assert gc_pauses.sweep() >= 2
    assert gc.get_freeze_count() > 0  # the survivors of the sweep are frozen again


def test_what_exists_when_installed_is_frozen_at_once() -> None:
    gc.unfreeze()
    built = cycle()  # what a process has built by the time it installs: modules, tables
    assert gc.get_freeze_count() == 0
    try:
        gc_pauses.install()
        assert gc.get_freeze_count() > 0
        assert gc.collect(2) == 0 and gc.is_tracked(built)  # frozen: not walked again
    finally:
        gc.callbacks.remove(gc_pauses._freeze_survivors)
        gc.unfreeze()
        gc.collect()


def test_young_collections_freeze_nothing(frozen_after_full_collections: None) -> None:
    gc.unfreeze()
    gc.collect(0)
    gc.collect(1)
    assert gc.get_freeze_count() == 0
