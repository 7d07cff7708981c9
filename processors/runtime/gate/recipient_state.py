"""Per-(tenant, recipient) state on top of a partition store
(processors.runtime.engine.state_store).

Keys are "tenant_id:<E.164 or BSUID>" (an identity's own record) and "tenant_id:<number>#<BSUID>"
(a linked BSUID's history kept in its number's partition), UTF-8; values the compact JSON of
processors.core.policy.state.RecipientState. Every change is also a changelog record, produced by
the caller in the transaction that commits the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from processors.core.enrich import parse_recipient
from processors.core.policy import PolicySet, RecipientState
from processors.core.policy import state as st
from processors.core.policy.state import REDUCERS, state_key
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import tenant_slots


def recipient_identity(contract: str, document: dict[str, Any]) -> str | None:
    """The E.164 number or BSUID a routed document is about; None when it is neither."""
    if contract == "outbound_message":
        return parse_recipient(document["recipient"], document.get("recipient_region")).identity
    return parse_recipient(document[REDUCERS[contract][1]]).identity


def recipient_key(contract: str, document: dict[str, Any]) -> str | None:
    """tenant_id:identity of any routed contract; None when the recipient is not valid."""
    identity = recipient_identity(contract, document)
    return state_key(document["tenant_id"], identity) if identity else None


def member_key(tenant_id: str, number: str, member: str) -> str:
    """The record of a BSUID's state kept in its number's partition, beside the number's."""
    return f"{tenant_id}:{number}#{member}"


def user_state(tenant: str, head: str, head_state: RecipientState, members: Sequence[str],
               load: Callable[[str], RecipientState], now: float) -> RecipientState:
    """One user's state: its head identity's record and its linked BSUIDs' member records."""
    return st.combine([head_state, *(load(member_key(tenant, head, member))
                                     for member in members)], now)


def load(store: PartitionStore, key: str) -> RecipientState:
    raw = store.get(key.encode("utf-8"))
    return st.from_json(orjson.loads(raw)) if raw else st.EMPTY


def load_committed(store: PartitionStore, key: str) -> RecipientState:
    """The state as last committed (a check reads this, never the batch in flight)."""
    raw = store.get_committed(key.encode("utf-8"))
    return st.from_json(orjson.loads(raw)) if raw else st.EMPTY


def retention(policies: PolicySet, tenant_id: str, dedup_seconds: float) -> st.Retention:
    parameters = policies.for_tenant(tenant_id).parameters
    return st.Retention(parameters.service_window_seconds, parameters.marketing_cooldown_seconds,
                        dedup_seconds)


def save(store: PartitionStore, key: str, state: RecipientState) -> tuple[bytes, bytes | None]:
    """Stage the new state (an empty one deletes the key); returns the changelog record."""
    raw_key = key.encode("utf-8")
    value = None if state.is_empty() else st.to_bytes(state)
    store.put(raw_key, value)
    return raw_key, value


def sweep(store: PartitionStore, policies: PolicySet, dedup_seconds: float,
          now: float) -> tuple[int, list[tuple[bytes, bytes | None]]]:
    """Drop what has expired in one partition; returns (entries kept, changelog records)."""
    changes: list[tuple[bytes, bytes | None]] = []
    kept = 0
    for raw_key, raw_value in store.items():
        if raw_key.startswith(tenant_slots.PREFIX):  # the tenant stage's slots and ledgers
            kept_it, value = tenant_slots.swept(raw_key, raw_value, now)
            if value is not raw_value:
                store.put(raw_key, value)
                changes.append((raw_key, value))
            kept += kept_it
            continue
        key = raw_key.decode("utf-8")
        state = st.from_json(orjson.loads(raw_value))
        pruned = st.prune(state, now, retention(policies, key.split(":", 1)[0], dedup_seconds))
        if pruned is not state:
            changes.append(save(store, key, pruned))
        kept += not pruned.is_empty()
    return kept, changes
