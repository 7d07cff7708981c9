"""The batch's view of its partitions' state: each record read once and written back once.

A busy recipient's state is decoded and encoded once per batch, not once per record, and makes
one changelog record per batch; so do a tenant's slot records and ledger (bytes). flush()
stages every change in its store and puts its changelog record among the batch's outputs (the
same transaction); forget() drops them, for a batch that will not commit.
"""

from __future__ import annotations

from processors.core.policy import RecipientState
from processors.core.policy import state as st
from processors.runtime.engine.records import Output
from processors.runtime.engine.state_store import PartitionStore
from processors.runtime.gate import recipient_state, tenant_slots


class BatchState:
    def __init__(self, changelog_topic: str) -> None:
        self.changelog = changelog_topic
        # (partition, key) -> the state as the batch has it; the stores of the changed ones
        self.cached: dict[tuple[int, str], RecipientState] = {}
        self.dirty: dict[tuple[int, str], PartitionStore] = {}
        self.raw: dict[tuple[int, str], bytes | None] = {}
        self.raw_dirty: dict[tuple[int, str], PartitionStore] = {}
        self.stages: dict[tuple[int, str], tenant_slots.Stage] = {}  # decoded once a batch
        self.stages_dirty: dict[tuple[int, str], PartitionStore] = {}

    def load(self, store: PartitionStore, key: str) -> RecipientState:
        """A record's state as the batch has it so far."""
        slot = (store.partition, key)
        state = self.cached.get(slot)
        if state is None:
            state = self.cached[slot] = recipient_state.load(store, key)
        return state

    def put(self, store: PartitionStore, key: str, state: RecipientState) -> None:
        """A record's new state; staged in the store with its changelog record at flush()."""
        slot = (store.partition, key)
        self.cached[slot] = state
        self.dirty[slot] = store

    def take(self, store: PartitionStore, key: str) -> RecipientState:
        """Remove a record from this partition; returns its history."""
        state = self.load(store, key)
        if not state.is_empty():
            self.put(store, key, st.EMPTY)
        return state.history()

    def load_raw(self, store: PartitionStore, key: str) -> bytes | None:
        """A tenant-stage record as the batch has it so far."""
        slot = (store.partition, key)
        if slot not in self.raw:
            self.raw[slot] = store.get(key.encode("utf-8"))
        return self.raw[slot]

    def put_raw(self, store: PartitionStore, key: str, value: bytes | None) -> None:
        slot = (store.partition, key)
        self.raw[slot] = value
        self.raw_dirty[slot] = store

    def load_stage(self, store: PartitionStore, key: str, now: float) -> tenant_slots.Stage:
        """A tenant's ledger as the batch has it so far, open at the batch's clock."""
        slot = (store.partition, key)
        stage = self.stages.get(slot)
        if stage is None:
            stage = tenant_slots.stage_at(tenant_slots.read_ledger(self.load_raw(store, key)),
                                          now)
        elif stage.clock != now:  # not the batch's clock (a sweep): count again
            stage = tenant_slots.stage_at(stage.ledger, now, stage.changed)
        self.stages[slot] = stage
        self.stages_dirty[slot] = store  # written at flush() only if it changed
        return stage

    def flush(self, out: list[Output]) -> None:
        """The end of a batch that will commit: every change staged in its store, and its
        changelog record among the batch's outputs."""
        for (partition, key), store in self.dirty.items():
            raw_key, value = recipient_state.save(store, key, self.cached[(partition, key)])
            out.append(Output(self.changelog, raw_key, value, partition))
        for (partition, key), store in self.stages_dirty.items():  # encoded once a batch
            stage = self.stages[(partition, key)]
            if stage.changed:
                self.put_raw(store, key, tenant_slots.ledger_bytes(stage.ledger))
        for (partition, key), store in self.raw_dirty.items():
            raw_key, value = key.encode("utf-8"), self.raw[(partition, key)]
            store.put(raw_key, value)
            out.append(Output(self.changelog, raw_key, value, partition))
        self.forget()

    def forget(self) -> None:
        """A batch that will not commit: drop what it read and changed."""
        self.cached.clear()
        self.dirty.clear()
        self.raw.clear()
        self.raw_dirty.clear()
        self.stages.clear()
        self.stages_dirty.clear()
