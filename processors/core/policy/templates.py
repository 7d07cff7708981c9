"""Template catalog entries as data: newest updated_at wins, seen as of a clock. Pure.

An entry states a status, a category, or both: the gate's own catalog entries state both, but
Meta's webhooks tell one at a time (a status update carries no category, a category update no
status). The history keeps each entry as stated; the entry in effect at a clock takes every
field it does not state from the newest older entry that does.
"""

from __future__ import annotations

from typing import Any

from processors.core.timeutil import parse_rfc3339

MAX_HISTORY = 4
FIELDS = ("category", "status")  # what an entry may leave to its predecessors
_FIELD_SET = frozenset(FIELDS)

TemplateHistory = tuple[dict[str, Any], ...]


def catalog_key(tenant_id: str, name: str, language: str) -> str:
    return f"{tenant_id}:{name}:{language}"


def merge(history: TemplateHistory | None, entry: dict[str, Any]) -> TemplateHistory:
    """Add an entry, keeping the history sorted by updated_at.

    At the same updated_at, what the later arrival states wins and the rest is kept (a status
    and a category update of the same moment make one entry). Entries beyond MAX_HISTORY are
    folded into the oldest kept one, so no stated field is forgotten.
    """
    at = parse_rfc3339(entry["updated_at"])
    kept = []
    for old in history or ():
        if parse_rfc3339(old["updated_at"]) == at:
            entry = {**old, **entry}
        else:
            kept.append(old)
    kept.append(entry)
    kept.sort(key=lambda e: parse_rfc3339(e["updated_at"]))
    while len(kept) > MAX_HISTORY:
        oldest = kept.pop(0)
        kept[0] = {**{f: oldest[f] for f in FIELDS if f in oldest}, **kept[0]}
    return tuple(kept)


def entry_at(history: TemplateHistory | None, clock: float | None) -> dict[str, Any] | None:
    """The entry in effect at the clock (None clock: the newest of all), fields resolved."""
    if not history:
        return None
    index = len(history) - 1
    if clock is not None:
        while index >= 0 and parse_rfc3339(history[index]["updated_at"]) > clock:
            index -= 1
        if index < 0:
            return None
    entry = history[index]
    if entry.keys() >= _FIELD_SET:  # a set test in C, not a generator per field
        return entry
    resolved = dict(entry)
    for older in reversed(history[:index]):
        for name in FIELDS:
            if name not in resolved and name in older:
                resolved[name] = older[name]
    return resolved


def pending_category(history: TemplateHistory | None, clock: float) -> dict[str, Any] | None:
    """The next entry after the clock that changes the category (a recategorisation Meta
    announced ahead), or None."""
    current = entry_at(history, clock)
    category = current.get("category") if current else None
    for entry in history or ():
        if parse_rfc3339(entry["updated_at"]) > clock and "category" in entry:
            if entry["category"] != category:
                return entry
            category = entry["category"]
    return None
