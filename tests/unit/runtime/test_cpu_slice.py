"""processors.runtime.cpu_slice: a thread asks Linux for a shorter slice, and only that thread
gets it."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from processors.runtime import cpu_slice

linux_with_slices = pytest.mark.skipif(
    not sys.platform.startswith("linux") or cpu_slice.current_ns() is None,
    reason="the kernel does not report slices (Linux before 6.12)")


def in_thread(action: object) -> tuple[object, int | None]:
    """Runs action() on a new thread: its result, and that thread's slice afterwards."""
    out: list[tuple[object, int | None]] = []

    def run() -> None:
        result = action() if callable(action) else None
        out.append((result, cpu_slice.current_ns()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


@linux_with_slices
def test_the_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() -> None:
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    before = cpu_slice.current_ns()
    refused, slice_ns = in_thread(lambda: cpu_slice.request(250))
    assert refused is None
    assert slice_ns == 250_000
    assert cpu_slice.current_ns() == before  # another thread's slice is its own
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice


@linux_with_slices
def test_a_slice_out_of_range_is_clamped() -> None:
    assert in_thread(lambda: cpu_slice.request(10))[1] == cpu_slice.MIN_US * 1000
    assert in_thread(lambda: cpu_slice.request(10**7))[1] == cpu_slice.MAX_US * 1000


def test_zero_asks_for_nothing() -> None:
    before = cpu_slice.current_ns()
    assert cpu_slice.request(0) == "not asked for"
    assert cpu_slice.current_ns() == before


def test_elsewhere_it_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "sparc64")
    refused = cpu_slice.request(200)
    assert refused is not None and "not supported" in refused
