"""A shorter CPU time slice for a thread that answers requests (Linux 6.12 and later).

Linux's EEVDF scheduler gives each runnable thread a virtual deadline of its eligible time
plus its slice; a thread that asks for a shorter slice (sched_setattr's sched_runtime, 0.1 to
100 ms, no privilege needed) gets earlier deadlines, so it is picked, and preempts a thread
with a longer slice, sooner when it wakes. Its share of the CPU (its weight, i.e. its nice
value) does not change: it waits less, it does not get more. The query server's thread asks
for one: on a machine whose cores are busy, a check waited in the run queue behind the stream
and the broker far longer than it took to answer (docs/performance.md, "Check API under load").

Elsewhere (not Linux, or a kernel that ignores sched_runtime for normal threads) this changes
nothing.

Where the process may (CAP_SYS_NICE, or an RLIMIT_RTPRIO the admin raised: systemd's
LimitRTPRIO=, ulimit -r), a thread can also take a real-time priority (SCHED_RR): it then runs
as soon as it wakes, ahead of every normal thread. The query server's thread takes one
(OUTBOUND_GATE_QUERY_RT_PRIORITY), and so does the stream thread
(OUTBOUND_GATE_STREAM_RT_PRIORITY): the query server's alone cost the stream its pace
(docs/performance.md, "Seventh look"); both together did better than neither
("Eighth look"). A real-time thread can starve the normal ones, so RealtimeGuard hands the
priority back for as long as the thread uses more than a set share of a core, and the flag
SCHED_RESET_ON_FORK keeps threads and processes it starts on the normal policy.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # syscall numbers (no libc wrapper)
SCHED_NORMAL = 0
MIN_US, MAX_US = 100, 100_000  # the kernel clamps a requested slice to this range


class SchedAttr(ctypes.Structure):
    """struct sched_attr (include/uapi/linux/sched/types.h), its first published size."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64)]


def request(microseconds: int) -> str | None:
    """Asks for a slice of `microseconds` for the calling thread (its nice value kept); 0
    asks for nothing. Returns None when it was set, else why not."""
    if microseconds <= 0:
        return "not asked for"
    number = SYS_SCHED_SETATTR.get(platform.machine())
    if not sys.platform.startswith("linux") or number is None:
        return f"not supported on {sys.platform}/{platform.machine()}"
    if os.sched_getscheduler(0) != SCHED_NORMAL:
        return "the thread does not use the normal policy"
    attr = SchedAttr(size=ctypes.sizeof(SchedAttr), sched_policy=SCHED_NORMAL,
                     sched_nice=os.getpriority(os.PRIO_PROCESS, 0),
                     sched_runtime=min(max(microseconds, MIN_US), MAX_US) * 1000)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, ctypes.byref(attr), 0) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def current_ns() -> int | None:
    """The calling thread's slice as the kernel reports it (None where it does not)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/sched") as status:
            for line in status:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1])
    except (OSError, ValueError):
        return None
    return None


def request_realtime(priority: int) -> str | None:
    """Asks for SCHED_RR at `priority` (1-99, clamped) for the calling thread, not inherited by
    the threads and processes it starts; 0 asks for nothing. Returns None when it was set,
    else why not (without CAP_SYS_NICE or an RLIMIT_RTPRIO of at least `priority`: refused)."""
    if priority <= 0:
        return "not asked for"
    if not sys.platform.startswith("linux"):
        return f"not supported on {sys.platform}"
    priority = min(max(priority, os.sched_get_priority_min(os.SCHED_RR)),
                   os.sched_get_priority_max(os.SCHED_RR))
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK,
                              os.sched_param(priority))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def release_realtime(slice_us: int) -> str | None:
    """Back to the normal policy (always allowed), with a slice of `slice_us` asked for as
    request() does. Returns None when the slice was set, else why not."""
    if not sys.platform.startswith("linux"):
        return f"not supported on {sys.platform}"
    if is_realtime():
        os.sched_setscheduler(0, SCHED_NORMAL, os.sched_param(0))
    return request(slice_us)


def is_realtime(pid: int = 0) -> bool:
    """Whether the calling thread (or the process `pid`'s main thread) runs under a real-time
    policy; False for a process that is gone."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        policy = os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK
    except OSError:
        return False
    return policy in (os.SCHED_RR, os.SCHED_FIFO)


@dataclass
class RealtimeGuard:
    """Keeps a thread's real-time priority only while it uses at most `max_share` of a core.

    Called every period on the thread itself (tick() reads its CPU time): above the share it
    goes back to the normal policy (`release`), and takes the priority again (`take`) once a
    period stays within the share. A flood of checks then competes with the stream as it did
    without the priority, instead of starving it."""

    max_share: float
    take: Callable[[], str | None]
    release: Callable[[], str | None]
    cpu_clock: Callable[[], float] = time.thread_time
    wall_clock: Callable[[], float] = time.monotonic
    holding: bool = True  # the priority was taken when the thread started
    last: tuple[float, float] = field(init=False)  # (CPU, wall clock) at the last look

    def __post_init__(self) -> None:
        self.last = (self.cpu_clock(), self.wall_clock())

    def tick(self) -> tuple[bool, float] | None:
        """Looks at the period since the last tick: (holding the priority now, the share
        used) when that changed, else None."""
        cpu, wall = self.cpu_clock(), self.wall_clock()
        used = (cpu - self.last[0]) / max(wall - self.last[1], 1e-9)
        self.last = (cpu, wall)
        if self.holding and used > self.max_share:
            self.release()
            self.holding = False
            return False, used
        if not self.holding and used <= self.max_share and self.take() is None:
            self.holding = True
            return True, used
        return None

    def look(self, thread: str, event: str, show: Callable[[int], None]) -> None:
        """tick(), and when that changed whether the priority is held: show(1 or 0) (a
        gauge's set) and a warning naming `thread`, with `event` as its log event."""
        changed = self.tick()
        if changed is None:
            return
        holding, used = changed
        show(int(holding))
        log.warning("%s %s its real-time priority: it used %.0f%% of a core", thread,
                    "takes back" if holding else "gives back", used * 100,
                    extra={"event": event, "realtime": holding,
                           "cpu_percent": round(used * 100)})
