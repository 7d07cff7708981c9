"""Python's garbage collector in the worker: full collections that do not walk the caches
(OUTBOUND_GATE_GC_FREEZE, on by default).

A full (generation 2) collection walks every container object of the process while holding the
GIL, and the parse and state caches fill to ~100,000 of them. After each full collection the
survivors are frozen (gc.freeze()): the next full collections walk only what is newer. Routing
200,000 loadgen events in one process, full collections paused it 56-75 ms each without the
freeze and 25-33 ms with it, 283-308 ms in all against 181-184 ms (two runs of each of
`python -m tests.benchmarks.router_cpu --events 200000 [--gc-freeze]`, thread CPU time).

The risk: a frozen object that later becomes cyclic garbage is not collected while frozen, so
every SWEEP_SECONDS everything is unfrozen and collected once (one full-length pause per
sweep, and until then such garbage holds its memory).
"""

from __future__ import annotations

import gc

SWEEP_SECONDS = 600.0


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()  # a full collection leaves nothing in the younger generations


def install() -> None:
    """From now on, the survivors of each full collection are frozen (idempotent); what the
    process has built so far is frozen at once: its modules and tables, most of what a full
    collection walks before traffic fills the caches."""
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
        gc.collect()


def installed() -> bool:
    return _freeze_survivors in gc.callbacks


def sweep() -> int:
    """Collect everything, the frozen objects too; the survivors are frozen again."""
    gc.unfreeze()
    return gc.collect()
