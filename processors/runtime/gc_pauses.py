"""Python's garbage collector in the worker: full collections that do not walk the caches.

A full (generation 2) collection walks every container object of the process while holding the
GIL. The parse and state caches fill to ~100,000 of them; in the check benchmark one such
collection took 60-170 ms, several times a minute while they filled, and every check and batch
in flight waited for it (docs/performance.md, "Check API under load"). After each full
collection the survivors are frozen (gc.freeze()): the next full collections walk only what is
newer. A frozen object that later becomes cyclic garbage is not collected while frozen, so
every SWEEP_SECONDS everything is unfrozen and collected once (one long pause per sweep; the
benchmark found ~0-60 such objects per 30 s).
"""

from __future__ import annotations

import gc

SWEEP_SECONDS = 600.0


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()  # a full collection leaves nothing in the younger generations


def install() -> None:
    """From now on, the survivors of each full collection are frozen (idempotent); what the
    process has built so far is frozen at once. Its modules and tables are most of what a full
    collection walks (~80,000 objects in a query server, 33 ms on an idle core): frozen at
    start, the first full collection under traffic walks only what came after (it took 119 ms
    in a phase of checks, docs/performance.md, "Check API under load")."""
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
        gc.collect()


def installed() -> bool:
    return _freeze_survivors in gc.callbacks


def sweep() -> int:
    """Collect everything, the frozen objects too; the survivors are frozen again."""
    gc.unfreeze()
    return gc.collect()
