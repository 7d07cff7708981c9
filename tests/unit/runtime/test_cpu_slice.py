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


def test_a_real_time_priority_is_taken_where_allowed_and_not_passed_on() -> None:
    def take_and_look() -> tuple[str | None, bool, int, bool, int | None]:
        refused = cpu_slice.request_realtime(1)
        held = cpu_slice.is_realtime()
        started: list[int] = []
        thread = threading.Thread(target=lambda: started.append(os.sched_getscheduler(0)))
        thread.start()
        thread.join()
        released = cpu_slice.release_realtime(300)
        return refused, held, started[0], cpu_slice.is_realtime(), (
            cpu_slice.current_ns() if released is None else None)

    seen: list[tuple[str | None, bool, int, bool, int | None]] = []
    thread = threading.Thread(target=lambda: seen.append(take_and_look()))
    thread.start()
    thread.join()
    refused, held, started_policy, after, slice_ns = seen[0]
    if refused is None:  # CAP_SYS_NICE or RLIMIT_RTPRIO: the thread runs SCHED_RR
        assert held
        assert started_policy == os.SCHED_OTHER  # SCHED_RESET_ON_FORK
    else:
        assert refused == os.strerror(1) and not held  # EPERM, said as such
    assert not after  # released: the normal policy again, with the slice asked for
    assert slice_ns in (300_000, None)
    assert not cpu_slice.is_realtime()  # this thread never asked


def test_a_refused_priority_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(1, os.strerror(1))

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert cpu_slice.request_realtime(1) == os.strerror(1)
    assert cpu_slice.request_realtime(0) == "not asked for"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_guard_gives_the_priority_back_while_the_thread_uses_too_much() -> None:
    cpu, wall = Clock(), Clock()
    calls: list[str] = []
    refuse_take = [False]

    def take() -> str | None:
        calls.append("take")
        return "refused" if refuse_take[0] else None

    def release() -> str | None:
        calls.append("release")
        return None

    guard = cpu_slice.RealtimeGuard(0.5, take, release, cpu_clock=cpu, wall_clock=wall)

    def period(used: float) -> tuple[bool, float] | None:
        cpu.now += used
        wall.now += 1.0
        return guard.tick()

    assert period(0.4) is None and calls == []  # within the share: kept
    changed = period(0.9)
    assert changed is not None and not changed[0] and changed[1] == pytest.approx(0.9)
    assert calls == ["release"]
    assert period(0.8) is None and calls == ["release"]  # still too much: stays released
    refuse_take[0] = True
    assert period(0.1) is None and not guard.holding  # taking it again was refused
    refuse_take[0] = False
    changed = period(0.1)
    assert changed is not None and changed[0] and changed[1] == pytest.approx(0.1)
    assert guard.holding
    assert calls == ["release", "take", "take"]
