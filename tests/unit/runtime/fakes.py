"""A broker in memory for the runtime's unit tests: topic logs with transactions, a producer
(transactions, fencing, delivery reports), the route consumer's few calls and a restore
consumer. Enough of confluent-kafka's surface for processors.runtime, nothing more."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition


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
    group_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # transactional id -> epoch
    generation: int = 1  # the consumer group's

    def committed(self, topic: str, partition: int | None = None) -> list[Stored]:
        """What a read_committed consumer sees."""
        parts = range(self.partitions) if partition is None else [partition]
        return [r for p in parts for r in self.logs[(topic, p)] if r.committed]


class Delivered:
    """A delivery report's message."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


def fenced() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))


class FakeProducer:
    """Transactional: records are written at produce time and become visible at commit; their
    delivery reports are served by flush. A newer producer with the same transactional id
    fences this one; offsets sent with an old group generation are refused (KIP-447)."""

    def __init__(self, broker: Broker, transactional_id: str,
                 on_delivery: Callable[[Any, Any], None]) -> None:
        self.broker = broker
        self.id = transactional_id
        self.on_delivery = on_delivery
        broker.epochs[transactional_id] = broker.epochs.get(transactional_id, 0) + 1
        self.epoch = broker.epochs[transactional_id]
        self.open: list[Stored] = []
        self.reports: list[Delivered] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.fail_next_commit = False
        self.aborted = 0

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, on_delivery: Any = None, timestamp: int = 0,
                headers: Any = None) -> None:
        partition = 0 if partition < 0 else partition
        log = self.broker.logs[(topic, partition)]
        stored = Stored(len(log), key, value)
        log.append(stored)
        self.open.append(stored)
        self.reports.append(Delivered(topic, partition, stored.offset))

    def poll(self, timeout: float = -1) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float = -1) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            self.on_delivery(None, report)
        return 0

    def begin_transaction(self) -> None:
        self.open, self.offsets = [], {}

    def send_offsets_to_transaction(self, positions: list[TopicPartition], metadata: Any,
                                    timeout: float = -1) -> None:
        if metadata.generation != self.broker.generation:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION, "stale generation",
                                            txn_requires_abort=True))
        self.offsets = {(tp.topic, tp.partition): tp.offset for tp in positions}

    def commit_transaction(self, timeout: float = -1) -> None:
        if self.broker.epochs[self.id] != self.epoch:
            raise fenced()
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker went away",
                                            txn_requires_abort=True))
        for stored in self.open:
            stored.committed = True
        self.broker.group_offsets.update(self.offsets)
        self.open = []

    def abort_transaction(self, timeout: float = -1) -> None:
        if self.broker.epochs[self.id] != self.epoch:
            raise fenced()
        self.aborted += 1
        self.open, self.offsets = [], {}


class FakeConsumer:
    """The route consumer as the loop uses it between polls: its assignment, seeks, group
    metadata (with the generation it joined in)."""

    def __init__(self, broker: Broker, assignment: list[TopicPartition]) -> None:
        self.broker = broker
        self._assignment = assignment
        self.generation = broker.generation
        self.seeks: dict[tuple[str, int], int] = {}

    def assignment(self) -> list[TopicPartition]:
        return self._assignment

    def seek(self, tp: TopicPartition) -> None:
        self.seeks[(tp.topic, tp.partition)] = tp.offset

    def consumer_group_metadata(self) -> Any:
        return SimpleNamespace(generation=self.generation)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.broker.group_offsets.update({(tp.topic, tp.partition): tp.offset for tp in offsets})


class Read:
    """A consumed record."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None,
                 partition: int = 0) -> None:
        self._record = (offset, key, value)
        self._partition = partition

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._record[0]

    def key(self) -> bytes | None:
        return self._record[1]

    def value(self) -> bytes | None:
        return self._record[2]


class FakeRestoreConsumer:
    """read_committed by assignment: the end is the last stable offset, and the position moves
    past records it does not hand out (open or aborted ones), as librdkafka's does."""

    def __init__(self, broker: Broker, per_poll: int = 2) -> None:
        self.broker = broker
        self.per_poll = per_poll
        self.positions: dict[tuple[str, int], int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {(tp.topic, tp.partition): tp.offset for tp in partitions}

    def unassign(self) -> None:
        self.positions = {}

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        log = self.broker.logs[(partition.topic, partition.partition)]
        return 0, next((r.offset for r in log if not r.committed), len(log))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
                for tp in partitions]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        out: list[Any] = []
        for (topic, partition), start in self.positions.items():
            log = self.broker.logs[(topic, partition)]
            _, end = self.get_watermark_offsets(TopicPartition(topic, partition))
            stop = min(end, start + min(num_messages, self.per_poll))
            out += [Read(r.offset, r.key, r.value, partition) for r in log[start:stop]
                    if r.committed]
            self.positions[(topic, partition)] = max(start, stop)
        return out


def make_router(partitions: int, loadgen_catalog: list[Any] | None = None) -> Any:
    """A GateProcessor over the default policy and a catalog of two templates (or the loadgen's
    catalog records), no Kafka."""
    import orjson
    from prometheus_client import CollectorRegistry

    from processors.core.policy import load_policy
    from processors.runtime.catalog import CatalogReplica
    from processors.runtime.gate.processor import GateProcessor
    from processors.runtime.metrics import GateMetrics
    from processors.runtime.policy_feed import PolicyHolder
    from processors.settings import Settings
    from tests.factories import template_entry

    catalog = CatalogReplica()
    for entry in (template_entry("promo", "MARKETING"), template_entry("notice", "UTILITY")):
        catalog.data[f"acme:{entry['name']}:en_US"] = (entry,)
    for record in loadgen_catalog or ():
        catalog.data[record.key.decode()] = (orjson.loads(record.value),)
    return GateProcessor(Settings(partitions=partitions), PolicyHolder(load_policy()), catalog,
                  GateMetrics(CollectorRegistry(), 100))
