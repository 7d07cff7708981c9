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
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

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
