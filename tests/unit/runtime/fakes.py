"""A broker in memory for the runtime's unit tests: topic logs with transactions, a producer
(batches, transactions, fencing) and a restore consumer. Enough of aiokafka's surface for
processors.runtime, nothing more."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced


@dataclass
class Stored:
    offset: int
    key: bytes | None
    value: bytes | None
    committed: bool = False


@dataclass
class Broker:
    partitions: int = 4
    logs: dict[tuple[str, int], list[Stored]] = field(default_factory=lambda: defaultdict(list))
    group_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # transactional id -> epoch

    def committed(self, topic: str, partition: int | None = None) -> list[Stored]:
        """What a read_committed consumer sees."""
        parts = range(self.partitions) if partition is None else [partition]
        return [r for p in parts for r in self.logs[(topic, p)] if r.committed]


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.capacity = capacity

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any,
               headers: Any) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Transactional: records are written at send time and become visible at commit. A newer
    producer with the same transactional id fences this one (its commit raises)."""

    def __init__(self, broker: Broker, transactional_id: str, batch_capacity: int = 3) -> None:
        self.broker = broker
        self.id = transactional_id
        broker.epochs[transactional_id] = broker.epochs.get(transactional_id, 0) + 1
        self.epoch = broker.epochs[transactional_id]
        self.batch_capacity = batch_capacity
        self.open: list[Stored] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.fail_next_commit = False
        self.stopped = False

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        log = self.broker.logs[(topic, partition)]
        first = len(log)
        for key, value in batch.records:
            stored = Stored(len(log), key, value)
            log.append(stored)
            self.open.append(stored)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=first))
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.broker.partitions))

    async def begin_transaction(self) -> None:
        self.open, self.offsets = [], {}

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int],
                                          group_id: str) -> None:
        self.offsets = dict(offsets)

    async def commit_transaction(self) -> None:
        if self.broker.epochs[self.id] != self.epoch:
            raise ProducerFenced()
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise ConnectionError("broker went away")
        for stored in self.open:
            stored.committed = True
        self.broker.group_offsets.update(self.offsets)
        self.open = []

    async def stop(self) -> None:
        self.stopped = True


class FakeRestoreConsumer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.positions: dict[TopicPartition, int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp: 0 for tp in partitions}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {}
        for tp in partitions:  # the last stable offset: up to the first open record
            log = self.broker.logs[(tp.topic, tp.partition)]
            ends[tp] = next((r.offset for r in log if not r.committed), len(log))
        return ends

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        out: dict[TopicPartition, list[Any]] = {}
        for tp in partitions:
            log = self.broker.logs[(tp.topic, tp.partition)]
            start = self.positions[tp]
            chunk = [r for r in log[start:start + (max_records or 2)] if r.committed]
            self.positions[tp] = min(len(log), start + (max_records or 2))
            out[tp] = chunk
        return out


def make_router(partitions: int, loadgen_catalog: list[Any] | None = None) -> Any:
    """A Router over the default policy and a catalog of two templates (or the loadgen's
    catalog records), no Kafka."""
    import orjson
    from prometheus_client import CollectorRegistry

    from processors.core.policy import load_policy
    from processors.runtime.metrics import GateMetrics
    from processors.runtime.policy_feed import PolicyHolder
    from processors.runtime.routing import Router
    from processors.settings import Settings
    from tests.factories import template_entry

    catalog = SimpleNamespace(data={})
    for entry in (template_entry("promo", "MARKETING"), template_entry("notice", "UTILITY")):
        catalog.data[f"acme:{entry['name']}:en_US"] = [entry]
    for record in loadgen_catalog or ():
        catalog.data[record.key.decode()] = [orjson.loads(record.value)]
    return Router(Settings(partitions=partitions), PolicyHolder(load_policy()), catalog,
                  GateMetrics(CollectorRegistry(), 100))
