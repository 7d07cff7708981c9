"""How the identities of one user are linked: a phone number and Meta's business-scoped user
IDs (a BSUID and a parent BSUID). Pure.

An event that names a phone number and a BSUID of one user, for one tenant, links them. The
number is the head of the user's group: it lists the BSUIDs linked to it (one of each kind),
and each BSUID names its number (its home). A newer link replaces an older one on either side
(Meta issues a new BSUID when a user changes number). The state of every identity in the group
applies to a send addressed to any of them (processors.core.policy.state.combine).

The offline check applies these functions to one dictionary; the live worker applies them in
the partitions that own each identity (processors.runtime.gate.processor).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from processors.core.enrich import BSUID, PARENT_BSUID, PHONE, parse_recipient
from processors.core.policy.state import RecipientState

# The optional fields of a state event that name the same user's BSUIDs (the primary field,
# recipient or sender, is then the phone number).
LINK_FIELDS = (("user_id", BSUID), ("parent_user_id", PARENT_BSUID))


def named_links(document: dict[str, Any], primary: str) -> list[tuple[str, str]]:
    """(kind, BSUID) that a state event links to its primary identity, when that is a number.

    A field that holds no valid BSUID of the kind its name says links nothing."""
    if parse_recipient(primary).kind != PHONE:
        return []
    found = []
    for field, kind in LINK_FIELDS:
        value = document.get(field)
        if isinstance(value, str):
            other = parse_recipient(value)
            if other.valid and other.kind == kind and other.identity is not None:
                found.append((kind, other.identity))
    return found


def members(head: RecipientState) -> list[str]:
    """The BSUIDs a number lists as linked to it."""
    return [identity for _, identity, _ in head.links]


def link(head: RecipientState, kind: str, identity: str, at: float
         ) -> tuple[RecipientState, str | None, bool]:
    """The number's side of a link: (new state, the BSUID it replaced, whether it changed).

    An older link than the one the number holds for that kind is ignored; the same link again
    only moves its time forward."""
    current = next((entry for entry in head.links if entry[0] == kind), None)
    if current is not None and current[1] == identity:
        if at <= current[2]:
            return head, None, False
        links = tuple(e if e[0] != kind else (kind, identity, at) for e in head.links)
        return replace(head, links=links), None, False
    if current is not None and current[2] > at:
        return head, None, False
    links = tuple(sorted((*(e for e in head.links if e[0] != kind), (kind, identity, at))))
    return replace(head, links=links), current[1] if current else None, True


def unlink(head: RecipientState, identity: str) -> RecipientState:
    return replace(head, links=tuple(e for e in head.links if e[1] != identity))


def claim(member: RecipientState, number: str, at: float
          ) -> tuple[RecipientState, str | None, bool]:
    """The BSUID's side of a link: (new state, the number it was linked to before, changed)."""
    current = member.home
    if current is not None and current[0] == number:
        return (replace(member, home=(number, at)) if at > current[1] else member), None, False
    if current is not None and current[1] > at:
        return member, None, False  # linked to another number since: this link is stale
    return replace(member, home=(number, at)), current[0] if current else None, True


def claim_released(member: RecipientState) -> RecipientState:
    """The BSUID's side when its number replaced it with another BSUID: on its own again."""
    return replace(member, home=None)
