"""How the identities of one user are linked: a phone number and Meta's business-scoped user
IDs (a BSUID and a parent BSUID). Pure.

An event that names a phone number and a BSUID of one user, for one tenant, links them. The
number is the head of the user's group: it lists the BSUIDs linked to it (one of each kind),
and each BSUID names its number (its home). A newer link replaces an older one on either side
(Meta issues a new BSUID when a user changes number). The state of every identity in the group
applies to a send addressed to any of them (processors.core.policy.state.combine).

A user who changes their number (Meta's user_changed_number system message) is still the
same user: the new number heads the user and lists the old one as its previous_number, the old
number follows the new one (its home) as a BSUID does, and its history joins the user. The BSUIDs
Meta names as the user's previous ones (previous_user_id, previous_parent_user_id) are linked as
previous_bsuid / previous_parent_bsuid, distinct kinds from the new BSUIDs Meta issues with the
new number. Every identity stays one hop from its head: a number that starts following another
lets its own links go (follow()), and a number named as the new one of a later change heads its
user again (becomes_head()), so a change back (A to B, then B to A) makes no loop.

The offline check applies these functions to one dictionary; the live worker applies them in
the partitions that own each identity (processors.runtime.gate.processor).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from processors.core.enrich import BSUID, PARENT_BSUID, PHONE, parse_recipient
from processors.core.policy.state import RecipientState

# Link kinds a number lists besides its BSUIDs (BSUID, PARENT_BSUID): the number it replaced
# and the BSUIDs the user had with that number (Meta issues new ones with a new number).
PREVIOUS_NUMBER = "previous_number"
PREVIOUS_BSUID, PREVIOUS_PARENT_BSUID = "previous_bsuid", "previous_parent_bsuid"
# The optional fields of a state event that name the same user's other identities (the primary
# field, recipient or sender, is then the phone number): (field, link kind, identity kind).
LINK_FIELDS = (("previous_number", PREVIOUS_NUMBER, PHONE),
               ("user_id", BSUID, BSUID), ("parent_user_id", PARENT_BSUID, PARENT_BSUID),
               ("previous_user_id", PREVIOUS_BSUID, BSUID),
               ("previous_parent_user_id", PREVIOUS_PARENT_BSUID, PARENT_BSUID))


def named_links(document: dict[str, Any], primary: str) -> list[tuple[str, str]]:
    """(kind, identity) that a state event links to its primary identity, when that is a number.

    A field that holds no valid identity of the kind its name says links nothing; the previous
    number first, so that the number heads its user before its other links are made."""
    own = parse_recipient(primary)
    if own.kind != PHONE:
        return []
    found = []
    for field, kind, expected in LINK_FIELDS:
        value = document.get(field)
        if isinstance(value, str):
            other = parse_recipient(value)
            if other.valid and other.kind == expected and other.identity is not None \
                    and other.identity != own.identity:
                found.append((kind, other.identity))
    return found


def changes_number(document: dict[str, Any]) -> bool:
    """A state event that says its number replaced another one (user_changed_number)."""
    return isinstance(document.get("previous_number"), str)


def members(head: RecipientState) -> list[str]:
    """The BSUIDs a number lists as linked to it."""
    return [identity for _, identity, _ in head.links]


def link(head: RecipientState, kind: str, identity: str, at: float
         ) -> tuple[RecipientState, str | None, bool]:
    """The number's side of a link: (new state, the BSUID it replaced, whether it changed).

    An older link than the one the number holds for that kind is ignored; the same link again
    only moves its time forward. An identity is listed once: linked under another kind, it
    moves to this one."""
    if any(entry[1] == identity and entry[0] != kind for entry in head.links):
        head = unlink(head, identity)
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


def becomes_head(number: RecipientState, at: float) -> tuple[RecipientState, str | None, bool]:
    """The new number's side of a number change at `at`, before it lists the old number:
    (new state, the number it followed and now lets go of, stale).

    A number that followed another one since before the change heads its user again (a change
    back); one that has followed another since after it has moved on: the change is stale."""
    if number.home is None:
        return number, None, False
    if number.home[1] > at:
        return number, None, True
    return replace(number, home=None), number.home[0], False


def claim(member: RecipientState, number: str, at: float
          ) -> tuple[RecipientState, str | None, bool]:
    """The BSUID's (or old number's) side of a link: (new state, the number it was linked to
    before, changed). A number that heads a later change of its own is not claimed."""
    if any(kind == PREVIOUS_NUMBER and linked > at for kind, _, linked in member.links):
        return member, None, False
    current = member.home
    if current is not None and current[0] == number:
        return (replace(member, home=(number, at)) if at > current[1] else member), None, False
    if current is not None and current[1] > at:
        return member, None, False  # linked to another number since: this link is stale
    return replace(member, home=(number, at)), current[0] if current else None, True


def claim_released(member: RecipientState) -> RecipientState:
    """The BSUID's side when its number replaced it with another BSUID: on its own again."""
    return replace(member, home=None)


def follows(member: RecipientState, number: str) -> bool:
    return member.home is not None and member.home[0] == number


def follow(old: RecipientState) -> tuple[RecipientState, list[tuple[str, str]]]:
    """An old number that now follows its new one: (its record, the links it lets go).

    It keeps no links, so that every identity is one hop from its head (a send to a BSUID of
    the old number that the change did not name is decided on that BSUID's own state; Meta
    names it as previous_user_id). Its history moves to the user (the caller's)."""
    return replace(old, links=()), [(kind, identity) for kind, identity, _ in old.links]
