"""StreamThread: the route loop, consume -> tasks -> one transaction per task and batch.

Why not a Faust agent: with a backlog and a second worker joining, Faust 0.15 committed input
offsets past records its route agent never processed (about 20,000 of 95,272 decisions were
lost, reproduced in issue 3), and its exactly-once mode has open reports of duplicates. This
loop is small and does what Kafka Streams' exactly-once does:

- one consumer group over the outbound, state, webhooks and repartition topics, read with
  read_committed and a range assignor, so a worker owns the same partition numbers of every
  topic (co-partitioning);
- per owned partition number a task (processors.runtime.task) with its own transactional
  producer and state store;
- per batch and task one transaction holds the outputs and the input offsets; either all of it
  becomes visible to read_committed consumers, or none of it and the input is read again.

With OUTBOUND_GATE_PROCESSING_GUARANTEE=at_least_once the tasks share one idempotent producer
and offsets are committed after the outputs are acknowledged (a crash can repeat a decision).
It runs inside the Faust worker as a service of the app, beside the catalog agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from mode import Service

from processors.runtime import kafka_clients, state_store
from processors.runtime.changelog_reader import ChangelogReader
from processors.runtime.metrics import GateMetrics
from processors.runtime.routing import Record, Router
from processors.runtime.task import StreamTask, first_offsets, next_offsets
from processors.runtime.task_manager import TaskManager, stop_quietly
from processors.settings import Settings

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # pause before a task that failed is tried again


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, thread: StreamThread) -> None:
        self.thread = thread

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.thread.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.thread.assigned(assigned)


class StreamThread(Service):
    def __init__(self, settings: Settings, router: Router, metrics: GateMetrics,
                 catalog_ready: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.router = router
        self.metrics = metrics
        self.catalog_ready = catalog_ready
        self.group = f"{settings.app_id}-route"
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self.data_dir = Path(settings.data_dir).resolve() / settings.app_id / "route"
        self.scheme = settings.store.split(":", 1)[0]
        self.tasks: TaskManager | None = None
        self.lock = asyncio.Lock()
        self.generation = 0
        self.ready = False
        self.consumer: AIOKafkaConsumer | None = None
        self.restorer: AIOKafkaConsumer | None = None
        self.shared: AIOKafkaProducer | None = None
        self.last_sweep = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------

    async def on_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.restorer = kafka_clients.route_consumer(self.settings, None)
        await self.restorer.start()
        if not self.exactly_once:
            self.shared = kafka_clients.route_producer(self.settings, None)
            await self.shared.start()
        self.tasks = TaskManager(
            lambda number: state_store.open_store(self.scheme, self.data_dir, number),
            ChangelogReader(self.restorer, self.settings.changelog_topic),
            self.settings.changelog_topic,
            self.start_producer if self.exactly_once else None)

    async def start_producer(self, number: int) -> AIOKafkaProducer:
        producer = kafka_clients.route_producer(self.settings,
                                                f"{self.settings.app_id}-route-{number}")
        await producer.start()  # InitProducerId: fences and aborts the previous owner's
        return producer

    async def on_stop(self) -> None:
        # Under the lock: the batch in flight commits (or aborts) before anything closes.
        async with self.lock:
            self.ready = False
            if self.consumer is not None:
                await self.consumer.stop()  # leaves the group: partitions move at once
            if self.tasks is not None:
                await self.tasks.close_all()
            for client in (self.shared, self.restorer):
                if client is not None:
                    await stop_quietly(client)

    @property
    def owned(self) -> dict[int, StreamTask]:
        return self.tasks.tasks if self.tasks is not None else {}

    @Service.task
    async def _run(self) -> None:
        while not self.catalog_ready():  # decisions need the template catalog loaded
            await self.sleep(0.2)
        consumer = self.consumer = kafka_clients.route_consumer(self.settings, self.group)
        consumer.subscribe(self.router.sources, listener=Rebalance(self))
        await consumer.start()
        log.info("route processor started", extra={
            "event": "route_start", "group": self.group,
            "guarantee": self.settings.processing_guarantee})
        while not self.should_stop:
            generation = self.generation
            batches = await consumer.getmany(timeout_ms=200,
                                             max_records=self.settings.batch_records)
            async with self.lock:
                if self.should_stop:
                    break
                if generation != self.generation:
                    # Fetched before a rebalance ended (possibly while a store was restoring):
                    # not processed, so read it again from the committed offsets.
                    await self.rewind(batches)
                    continue
                if batches and not self.catalog_ready():
                    # Faust's group is rebalancing and the catalog table may be recovering:
                    # decide nothing until it is whole again.
                    await self.rewind(batches)
                    await self.sleep(0.2)
                    continue
                if batches:
                    await self.process(batches)
                await self.maybe_sweep()

    async def rewind(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Set the partitions of unprocessed batches back to their committed offsets."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        for tp in batches:
            if tp not in owned:
                continue  # someone else's now: they start from the committed offset
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    # -- rebalances ---------------------------------------------------------------------

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:  # waits for the batch in flight
            self.generation += 1
            self.ready = False
            self.metrics.rebalances.inc()
            self.metrics.input_lag.clear()  # the new owners report their partitions

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            assert self.tasks is not None
            numbers = {tp.partition for tp in assigned}
            restoring = await self.tasks.assign(numbers)
            self.generation += 1
            self.ready = True
            log.info("route partitions assigned", extra={
                "event": "route_assignment", "partitions": sorted(numbers),
                "restore_seconds": round(restoring, 3)})

    # -- processing ---------------------------------------------------------------------

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        by_task: dict[int, dict[TopicPartition, list[ConsumerRecord]]] = defaultdict(dict)
        for tp, records in batches.items():
            if records:
                by_task[tp.partition][tp] = records
        await asyncio.gather(*(self.commit_task(number, records)
                               for number, records in by_task.items()))

    async def commit_task(self, number: int,
                          batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        task = self.owned.get(number)
        if task is None:
            return
        assert self.tasks is not None and self.consumer is not None
        fetched, now = time.monotonic(), time.time()
        try:
            if task.failed:
                await self.tasks.repair(task)
            out, tally = task.process(self.router, [
                as_record(record, fetched) for records in batches.values()
                for record in records], now)
            await task.commit(out, next_offsets(batches), self.group, self.shared,
                              self.consumer.commit)
        except Exception as exc:  # broker gone, fenced, timed out...: nothing is kept
            task.abort()
            self.metrics.transactions.labels("aborted").inc()
            log.warning("batch of partition %d not committed (%s: %s); it will be read again",
                        number, type(exc).__name__, exc, extra={
                            "event": "batch_aborted", "partition": number})
            for tp, offset in first_offsets(batches).items():
                self.consumer.seek(tp, offset)
            await asyncio.sleep(RETRY_SECONDS)
            return
        self.router.counted(tally)
        self.metrics.transactions.labels("committed").inc()
        self.metrics.batch_records.observe(sum(len(r) for r in batches.values()))

    async def maybe_sweep(self) -> None:
        if time.monotonic() - self.last_sweep < self.settings.state_sweep_seconds:
            return
        self.last_sweep = time.monotonic()
        now = time.time()
        assert self.consumer is not None
        for task in list(self.owned.values()):
            try:
                await task.commit(self.router.sweep(task.store, now), {}, self.group,
                                  self.shared, self.consumer.commit)
            except Exception as exc:
                task.abort()
                log.warning("state sweep of partition %d not committed (%s)", task.partition,
                            type(exc).__name__, extra={"event": "sweep_aborted"})

    @Service.timer(10.0)
    async def measure_lag(self) -> None:
        """Input records not yet processed, per owned partition: end offset - position. Asked
        of the broker on a timer, so a stuck worker still shows its lag growing."""
        consumer = self.consumer
        if consumer is None or not self.ready:
            return
        try:
            owned = list(consumer.assignment())
            ends = await consumer.end_offsets(owned)
            for tp in owned:
                position = await consumer.position(tp)
                self.metrics.input_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, ends[tp] - position))
        except Exception as exc:  # rebalancing or broker away: measured next time
            log.debug("lag not measured: %s", type(exc).__name__)


def as_record(record: ConsumerRecord, fetched: float) -> Record:
    return Record(record.topic, record.partition, record.offset, record.key, record.value,
                  record.timestamp / 1000.0, record.headers or (), fetched)
