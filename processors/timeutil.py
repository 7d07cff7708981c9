"""RFC 3339 timestamps <-> epoch seconds. Pure: the core keeps time as floats."""

from __future__ import annotations

from datetime import UTC, datetime


class BadTimestamp(ValueError):
    """A timestamp that is not RFC 3339 with a time zone."""


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp; the offset is required (no local-time guess)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise BadTimestamp(f"not an RFC 3339 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise BadTimestamp(f"timestamp without a time zone: {text!r}")
    return moment.timestamp()


def is_rfc3339(text: object) -> bool:
    if not isinstance(text, str) or "T" not in text.upper():
        return False
    try:
        parse_rfc3339(text)
    except BadTimestamp:
        return False
    return True


def format_rfc3339(epoch: float) -> str:
    """UTC, millisecond precision, 'Z' suffix: e.g. 2025-04-01T00:00:00.000Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
