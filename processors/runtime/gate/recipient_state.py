"""Per-(tenant, recipient) state on top of a partition store
(processors.runtime.engine.state_store).

Keys are "tenant_id:<E.164 or BSUID>" (an identity's own record) and "tenant_id:<number>#<BSUID>"
(a linked BSUID's history kept in its number's partition), UTF-8; values the compact JSON of
processors.core.policy.state.RecipientState. Every change is also a changelog record, produced by
the caller in the transaction that commits the input.
"""

from __future__ import annotations

import orjson

from processors.core.policy import PolicySet, RecipientState
from processors.core.policy import state as st
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import tenant_slots


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
