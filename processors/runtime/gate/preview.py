"""What the gate would decide, and what it knows of a user, from committed state, recording
nothing: the check API's answers (processors.runtime.check_api), by the same step as the
stream (processors.core.step), or the partition whose owner can answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.core import step
from processors.core.policy import RecipientState, explain
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.policy.state import state_key
from processors.runtime import catalog
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.gate.recipient_state import recipient_identity, user_state
from processors.runtime.policy_feed import PolicyHolder

# partition -> its committed state (key -> state), or None when the partition is not here
StateReader = Callable[[int], Callable[[str], RecipientState] | None]


@dataclass(frozen=True, slots=True)
class Preview:
    """A check's answer: the record the gate would publish, or the partition whose owner can
    answer (with the user's head identity when it was found on the way), or that the user's
    link is changing (ask again)."""

    record: dict[str, Any] | None = None
    partition: int | None = None
    head: str | None = None
    moving: bool = False


class Previews:
    def __init__(self, partitions: int, holder: PolicyHolder, catalog_table: CatalogReplica,
                 dedup: bool) -> None:
        self.partitions = partitions
        self.holder = holder
        self.catalog_table = catalog_table
        self.dedup = dedup

    def preview(self, document: dict[str, Any], read: StateReader, now: float,
                head: str | None = None) -> Preview:
        """What the stream would decide for this outbound message now. read(p) gives
        partition p's committed state, or None when p is not this worker's: the answer then
        names the partition (and the user's head identity, when known) whose owner can
        answer."""
        identity = recipient_identity("outbound_message", document)
        user = None
        if identity is not None:
            found = self.find_user(document["tenant_id"], identity, read, now, head)
            if isinstance(found, Preview):
                return found
            user = step.User(found[0], found[1], found[2], identity)
        policy = self.holder.current.for_tenant(document["tenant_id"])
        entry, upcoming = catalog.template_of(self.catalog_table, document, now)
        decided = step.decide(document, user, entry, upcoming, policy, now,
                              lambda: (None, False), dedup=False)
        assert decided.verdict is not None  # only de-duplication drops a message
        record = dict(decided.verdict.record)
        # The stream says it by the topic it writes to; a check says it in the record.
        record["decision"] = "accepted" if decided.verdict.decision.accepted else "rejected"
        record["preview"] = True
        if user is not None and self.dedup and \
                st.already_decided(user.combined, document["message_id"]):
            record["already_decided"] = True  # the stream would drop it as a repeat
        return Preview(record)

    def recipient(self, tenant: str, identity: str, read: StateReader, now: float,
                  head: str | None = None) -> Preview:
        """What the gate knows of one user (identity: a normalised number or BSUID), from
        committed state; or, as preview(), the partition whose owner can answer."""
        found = self.find_user(tenant, identity, read, now, head)
        if isinstance(found, Preview):
            return found
        head, head_state, combined = found
        return Preview(explain.describe(
            tenant, identity, head, head_state, combined,
            self.holder.current.for_tenant(tenant).parameters, now))

    def find_user(self, tenant: str, identity: str, read: StateReader, now: float,
                  head: str | None) -> tuple[str, RecipientState, RecipientState] | Preview:
        """(head identity, head's record, the user's combined state) of the user an identity
        belongs to, from committed state; a Preview naming where to ask when not here."""
        head_state: RecipientState | None = None
        if head is None:
            key = state_key(tenant, identity)
            loader = read(partition_for(key, self.partitions))
            if loader is None:
                return Preview(partition=partition_for(key, self.partitions))
            own = loader(key)
            head, head_state = (own.home[0], None) if own.home is not None else (identity, own)
        head_key = state_key(tenant, head)
        loader = read(partition_for(head_key, self.partitions))
        if loader is None:
            return Preview(partition=partition_for(head_key, self.partitions), head=head)
        if head_state is None:
            head_state = loader(head_key)
        members = ids.members(head_state)
        if identity != head and identity not in members:
            return Preview(moving=True)  # released while we looked: the link is changing
        return head, head_state, user_state(tenant, head, head_state, members, loader, now)

