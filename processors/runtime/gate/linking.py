"""Linked identities live: a number and the BSUIDs Meta names with it are one user, decided in
the number's partition.

Each step changes only records of the partition it runs in, and asks the partition that owns
the next record through the repartition topic (envelopes: claim, release, adopt, return), so
that every change is in the transaction of the partition that holds the record:

- the number's side (link): list the BSUID in the number's record, release the BSUID it
  replaces (its history goes back), and ask the BSUID's partition to follow (claim);
- the BSUID's side (claim): follow the number; hand its history over (adopt); tell the number
  it followed before to let it go (release);
- adopt: the history joins the user beside the number's record (or goes back: return);
- return: a history comes back to the BSUID's own record.

A number change (ids.PREVIOUS_NUMBER) takes the same steps, the old number in the BSUID's
place: the new number heads the user again if it followed another number before the change
(that one lets it go: release), and the old number, once it follows the new one, lets its own
links go (return) and hands over its history with that of the numbers it replaced (adopt).
"""

from __future__ import annotations

from processors.core.policy import RecipientState
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.policy.state import state_key
from processors.runtime.engine.records import Output
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import envelopes
from processors.runtime.gate.batch_state import BatchState
from processors.runtime.gate.envelopes import Envelope
from processors.runtime.gate.recipient_state import member_key


class Linking:
    def __init__(self, state: BatchState, send: envelopes.Send) -> None:
        self.state = state
        self.send = send

    def link(self, tenant: str, number: str, kind: str, member: str, at: float,
             store: PartitionStore, out: list[Output]) -> None:
        """The number's side (in its partition): a state event named the BSUID with it."""
        head_key = state_key(tenant, number)
        head = self.state.load(store, head_key)
        if kind == ids.PREVIOUS_NUMBER:
            head, former, stale = ids.becomes_head(head, at)
            if stale:  # the new number has moved on to another since
                return
            if former is not None:  # a change back: the number it followed lets it go
                self.state.put(store, head_key, head)
                self.send(out, state_key(tenant, former),
                          envelopes.release(tenant, number, former, number))
        head, replaced, changed = ids.link(head, kind, member, at)
        if not changed:
            if head != self.state.load(store, head_key):
                self.state.put(store, head_key, head)
            return
        self.state.put(store, head_key, head)
        if replaced is not None:
            history = self.state.take(store, member_key(tenant, number, replaced))
            self.send(out, state_key(tenant, replaced),
                      envelopes.returned(tenant, replaced, number, st.to_json(history)))
        self.send(out, state_key(tenant, member), envelopes.claim(tenant, member, number, at))

    def step(self, envelope: Envelope, store: PartitionStore, out: list[Output],
             now: float) -> None:
        """claim, release, adopt or return, in the partition it was sent to."""
        kind, tenant, member = envelope["kind"], envelope["tenant"], envelope["member"]
        own_key = state_key(tenant, member)
        if kind == envelopes.CLAIM:  # the BSUID's partition: follow the number
            number = envelope["number"]
            own = self.state.load(store, own_key)
            claimed, previous, changed = ids.claim(own, number, envelope["linked_at"])
            if not changed:
                if claimed != own:
                    self.state.put(store, own_key, claimed)
                if not ids.follows(claimed, number):
                    # A stale link: the BSUID follows a newer number (or the old number heads
                    # a later change of its own); the claimant lets go.
                    self.send(out, state_key(tenant, number), envelopes.release(
                        tenant, member, number,
                        claimed.home[0] if claimed.home is not None else member))
                return
            self.state.put(store, own_key, st.RecipientState(home=claimed.home))
            self.adopt(tenant, member, number, self.let_go(tenant, member, own, store, out,
                                                           now), out)
            if previous is not None:  # the number it was linked to hands over its part
                self.send(out, state_key(tenant, previous),
                          envelopes.release(tenant, member, previous, number))
        elif kind == envelopes.RELEASE:  # the old number's partition: let the BSUID go
            old_key = state_key(tenant, envelope["from_number"])
            head = self.state.load(store, old_key)
            if member in ids.members(head):
                self.state.put(store, old_key, ids.unlink(head, member))
            history = self.state.take(store, member_key(tenant, envelope["from_number"], member))
            self.adopt(tenant, member, envelope["to_number"], history, out)
        elif kind == envelopes.ADOPT:  # the number's partition: the history joins the user
            moved = st.from_json(envelope["state"])
            head = self.state.load(store, state_key(tenant, envelope["number"]))
            if member in ids.members(head):
                key = member_key(tenant, envelope["number"], member)
                self.state.put(store, key, st.merge(self.state.load(store, key), moved, now))
            else:  # released meanwhile: the history goes back to the BSUID
                self.send(out, own_key, envelopes.returned(tenant, member, envelope["number"],
                                                           envelope["state"]))
        elif kind == envelopes.RETURN:  # the BSUID's partition: its history comes back
            moved = st.from_json(envelope["state"])
            own = self.state.load(store, own_key)
            if own.home is not None and own.home[0] == envelope["from_number"]:
                own = ids.claim_released(own)
            if own.home is not None:  # linked to another number since: the history goes there
                self.adopt(tenant, member, own.home[0], moved, out)
                return
            self.state.put(store, own_key, st.merge(own, moved, now))
        else:
            raise ValueError(f"unknown repartition record kind {kind!r}")

    def let_go(self, tenant: str, old: str, own: RecipientState, store: PartitionStore,
               out: list[Output], now: float) -> RecipientState:
        """What an identity that now follows a number hands over: its history. An old number
        also lets its links go (ids.follow): a BSUID's history goes back to it (as when its
        number replaces it), a number it replaced hands its history to the user and is on its
        own again (one hop to every head; a number two changes back is decided alone)."""
        history = own.history()
        _, links = ids.follow(own)
        for kind, identity in links:
            moved = self.state.take(store, member_key(tenant, old, identity))
            if kind == ids.PREVIOUS_NUMBER:
                history = st.merge(history, moved, now)
                moved = st.EMPTY
            self.send(out, state_key(tenant, identity),
                      envelopes.returned(tenant, identity, old, st.to_json(moved)))
        return history

    def adopt(self, tenant: str, member: str, number: str, history: RecipientState,
              out: list[Output]) -> None:
        if not history.is_empty():
            self.send(out, state_key(tenant, number),
                      envelopes.adopt(tenant, member, number, st.to_json(history)))
