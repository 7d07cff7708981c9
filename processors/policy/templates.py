"""Template catalog entries as data: newest updated_at wins, seen as of a clock. Pure."""

from __future__ import annotations

from typing import Any

from processors.timeutil import parse_rfc3339

MAX_HISTORY = 4

TemplateHistory = tuple[dict[str, Any], ...]


def catalog_key(tenant_id: str, name: str, language: str) -> str:
    return f"{tenant_id}:{name}:{language}"


def merge(history: TemplateHistory | None, entry: dict[str, Any]) -> TemplateHistory:
    """Add an entry, keeping the history sorted by updated_at (ties: the later arrival wins)."""
    at = parse_rfc3339(entry["updated_at"])
    kept = [e for e in history or () if parse_rfc3339(e["updated_at"]) != at]
    kept.append(entry)
    kept.sort(key=lambda e: parse_rfc3339(e["updated_at"]))
    return tuple(kept[-MAX_HISTORY:])


def entry_at(history: TemplateHistory | None, clock: float | None) -> dict[str, Any] | None:
    """The newest entry in effect at the clock (None clock: the newest of all)."""
    if not history:
        return None
    if clock is None:
        return history[-1]
    for entry in reversed(history):
        if parse_rfc3339(entry["updated_at"]) <= clock:
            return entry
    return None
