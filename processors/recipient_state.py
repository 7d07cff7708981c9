"""Per-(tenant, recipient) state in a changelog-backed Faust table (RocksDB by default).

Values are the compact JSON of processors.policy.state.RecipientState. Keys are
"tenant_id:recipient_e164", and the table is co-partitioned with the topics the route agent
reads, so every change is written in the stream context of the partition that owns the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import faust
from yarl import URL

from processors.policy import PolicySet, RecipientState
from processors.policy import state as st
from processors.settings import Settings

log = logging.getLogger(__name__)

StateTable = Any  # faust.Table of str -> compact state (untyped in Faust's stubs)


def register(app: faust.App, settings: Settings) -> StateTable:
    return app.Table(
        "recipient-state",
        default=None,
        partitions=settings.partitions,
        # "scheme:name", not "scheme://": Faust treats the empty-path URL as falsy and silently
        # falls back to the app's store.
        store=f"{URL(settings.store).scheme}:recipient-state",
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="tenant_id:recipient_e164 -> inbound times, preferences, 131049 times",
    )


def load(table: StateTable, key: str) -> RecipientState:
    return st.from_json(table.get(key))


def retention(policies: PolicySet, tenant_id: str, dedup_seconds: float) -> st.Retention:
    parameters = policies.for_tenant(tenant_id).parameters
    return st.Retention(parameters.service_window_seconds, parameters.marketing_cooldown_seconds,
                        dedup_seconds)


def store(table: StateTable, key: str, state: RecipientState) -> None:
    if state.is_empty():
        table.pop(key, None)
    else:
        table[key] = st.to_json(state)


def apply_event(table: StateTable, key: str, contract: str, document: dict[str, Any],
                keep: st.Retention, now: float) -> None:
    """Apply one state event (already validated) and store the pruned result."""
    reducer, _ = st.REDUCERS[contract]
    store(table, key, st.prune(reducer(load(table, key), document), now, keep))


def partition_items(table: StateTable, partition: int,
                    partition_of: Callable[[str], int]) -> Iterator[tuple[str, Any]]:
    """The (key, value) pairs of one partition.

    RocksDB keeps one database per partition: read only that one (Faust 0.15's store offers
    no public per-partition iterator, hence the private names). The memory store holds every
    partition in one dict: filter it.
    """
    store = table.data
    databases = getattr(store, "_dbs", None)
    if databases is not None:
        database = databases.get(partition)
        if database is not None:
            for raw_key, raw_value in list(store._visible_items(database)):
                yield store._decode_key(raw_key), store._decode_value(raw_value)
        return
    for key, value in list(table.items()):
        if partition_of(key) == partition:
            yield key, value


async def sweep(table: StateTable, partition: int, partition_of: Callable[[str], int],
                policies: PolicySet, dedup_seconds: float, now: float) -> tuple[int, int]:
    """Drop expired entries of one partition's keys; returns (kept, removed)."""
    seen = removed = 0
    expired: list[tuple[str, RecipientState]] = []
    for key, value in partition_items(table, partition, partition_of):
        seen += 1
        if seen % 5000 == 0:
            await asyncio.sleep(0)  # let the worker breathe during a long scan
        state = st.from_json(value)
        keep = retention(policies, key.split(":", 1)[0], dedup_seconds)
        pruned = st.prune(state, now, keep)
        if pruned is not state:
            expired.append((key, pruned))
    for key, pruned in expired:
        removed += pruned.is_empty()
        store(table, key, pruned)
    return seen - removed, removed
