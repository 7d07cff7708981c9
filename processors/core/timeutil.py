"""RFC 3339 timestamps <-> epoch seconds. Pure: the core keeps time as floats."""

from __future__ import annotations

import functools
from datetime import UTC, datetime


class BadTimestamp(ValueError):
    """A timestamp that is not RFC 3339 with a time zone."""


@functools.lru_cache(maxsize=8192)  # the same instants recur: catalog entries, a batch's events
def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp; the offset is required (no local-time guess)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise BadTimestamp(f"not an RFC 3339 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise BadTimestamp(f"timestamp without a time zone: {text!r}")
    try:
        # "9999-12-31T23:59:59-01:00" is year 10000 in UTC and "0001-01-01T00:00:00+01:00" year
        # 0: datetime cannot hold them, so the gate could not write them back (format_rfc3339
        # raised ValueError in the offline check's clock). They are no instant we can decide at.
        moment.astimezone(UTC)
    except OverflowError as exc:
        raise BadTimestamp(f"timestamp out of range in UTC: {text!r}") from exc
    return moment.timestamp()


def is_rfc3339(text: object) -> bool:
    if not isinstance(text, str) or "T" not in text.upper():
        return False
    try:
        parse_rfc3339(text)
    except BadTimestamp:
        return False
    return True


# The instants RFC 3339 (four-digit years) and datetime can write.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC).timestamp()


@functools.lru_cache(maxsize=4096)  # the same instants recur: a batch's clock, status times
def format_rfc3339(epoch: float) -> str:
    """UTC, millisecond precision, 'Z' suffix: e.g. 2025-04-01T00:00:00.000Z.

    Clamped to years 0001..9999: a time computed from a valid one (a retry_after 24 h after a
    status stamped 9999-12-31T23:59:59Z) could otherwise fall outside what can be written.
    """
    epoch = min(max(epoch, EARLIEST), LATEST)
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
