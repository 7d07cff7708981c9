"""A tenant's messaging-limit slots in its partition's store (the tenant stage; see
docs/architecture.md, "Messaging limits, live").

Two kinds of records, beside recipient state in the same store and changelog, under keys
that start with a NUL byte (no recipient-state key does: those start with the tenant id):

- ``\\0slot\\0<tenant>\\0<user>`` -> the start of the user's slot (seconds, JSON number): exact.
- ``\\0ledger\\0<tenant>`` -> ``[[minute, count], ...]``: how many slots opened in each minute
  of the last 24 hours. A minute's slots count until the end of the minute plus 24 hours, so
  the tenant's count never drops before Meta's does (it may stay up to 60 s longer).

The decision itself is processors.core.policy.messaging_limit's (admit, apply).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from processors.core.policy.messaging_limit import WINDOW_SECONDS

PREFIX = b"\x00"
SLOT, LEDGER = "\x00slot\x00", "\x00ledger\x00"
BUCKET_SECONDS = 60

Ledger = tuple[tuple[float, int], ...]  # (minute start, slots opened in it), oldest first


def ledger_key(tenant: str) -> str:
    """The key of the tenant's ledger; its partition is the tenant stage's."""
    return f"{LEDGER}{tenant}"


def slot_key(tenant: str, user: str) -> str:
    return f"{SLOT}{tenant}\x00{user}"


def read_ledger(raw: bytes | None) -> Ledger:
    return tuple((float(m), int(n)) for m, n in orjson.loads(raw)) if raw else ()


def ledger_bytes(ledger: Ledger) -> bytes | None:
    return orjson.dumps(ledger) if ledger else None


def open_ledger(ledger: Ledger, clock: float) -> Ledger:
    """The minutes whose slots may still be open at the clock."""
    cut = 0
    while cut < len(ledger) and ledger[cut][0] + BUCKET_SECONDS + WINDOW_SECONDS <= clock:
        cut += 1
    return ledger[cut:] if cut else ledger


def in_use(ledger: Ledger) -> tuple[int, float | None]:
    """(slots in use, the start the oldest is counted from: the end of its minute)."""
    return sum(n for _, n in ledger), (ledger[0][0] + BUCKET_SECONDS if ledger else None)


def with_slot(ledger: Ledger, clock: float) -> Ledger:
    minute = clock - clock % BUCKET_SECONDS
    if ledger and ledger[-1][0] == minute:
        return (*ledger[:-1], (minute, ledger[-1][1] + 1))
    # A clock that stepped back lands in the newest minute: a slot is never counted shorter.
    if ledger and ledger[-1][0] > minute:
        return (*ledger[:-1], (ledger[-1][0], ledger[-1][1] + 1))
    return (*ledger, (minute, 1))


@dataclass(slots=True)
class Stage:
    """A tenant's ledger as a batch has it: the minutes still open at the batch's clock and
    what they count (summed once a batch, not once a send: a day of minutes is 1,440)."""

    ledger: Ledger
    used: int
    oldest: float | None  # the start the oldest open slot is counted from
    clock: float
    changed: bool  # the ledger differs from the stored one


def stage_at(ledger: Ledger, clock: float, changed: bool = False) -> Stage:
    kept = open_ledger(ledger, clock)
    used, oldest = in_use(kept)
    return Stage(kept, used, oldest, clock, changed or kept is not ledger)


def count_slot(stage: Stage, clock: float) -> None:
    """One slot more, opened at the clock."""
    stage.ledger = with_slot(stage.ledger, clock)
    stage.used += 1
    stage.oldest = stage.ledger[0][0] + BUCKET_SECONDS
    stage.changed = True


def user_slot(raw: bytes | None, clock: float) -> float | None:
    """The start of the user's slot if it is still open at the clock."""
    if raw is None:
        return None
    start = float(orjson.loads(raw))
    return start if start + WINDOW_SECONDS > clock else None


def slot_bytes(start: float) -> bytes:
    return orjson.dumps(start)


def swept(key: bytes, value: bytes, now: float) -> tuple[bool, bytes | None]:
    """A tenant-stage record at a sweep: (kept, its new value if changed, None to delete)."""
    if key.startswith(SLOT.encode()):
        if user_slot(value, now) is None:
            return False, None
        return True, value
    ledger = read_ledger(value)
    kept = open_ledger(ledger, now)
    return bool(kept), (value if kept is ledger else ledger_bytes(kept))
