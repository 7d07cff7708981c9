"""The route processor: consume -> Router -> produce, each batch committed as a transaction.

Why not a Faust agent: with a backlog and a second worker joining, Faust 0.15 committed input
offsets past records its route agent never processed (about 20,000 of 95,272 decisions were
lost, reproduced in issue 3), and its exactly-once mode has open reports of duplicates. This
loop is small and does what Kafka Streams' exactly-once does:

- one consumer group over the outbound, state, webhooks and repartition topics, read with
  read_committed and a range assignor, so a worker owns the same partition numbers of every
  topic (co-partitioning);
- per owned partition number p, a "lane": a transactional producer with the id
  `<app id>-route-<p>` (a new owner of p fences the previous one and aborts its open
  transaction) and the recipient state of p (processors.state_store);
- per batch and lane, one transaction holds the decisions, dead letters, re-keyed records,
  the changelog records of every state change, and the input offsets. Either all of it
  becomes visible to read_committed consumers, or none of it and the input is read again.

With OUTBOUND_GATE_PROCESSING_GUARANTEE=at_least_once the lanes share one idempotent producer
and offsets are committed after the outputs are acknowledged (a crash can repeat a decision).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from mode import Service

from processors import state_store
from processors.kafka_security import client_options
from processors.metrics import GateMetrics
from processors.routing import Output, Record, Router, Tally, partition_for_bytes
from processors.settings import Settings
from processors.state_store import PartitionStore

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # pause before a lane that failed is tried again


@dataclass
class Lane:
    """What a worker holds for one partition number it owns."""

    partition: int
    store: PartitionStore
    producer: AIOKafkaProducer | None = None  # exactly-once: this lane's own
    failed: bool = False


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: RouteProcessor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.processor.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.processor.assigned(assigned)


class RouteProcessor(Service):
    """Runs inside the Faust worker (a dependency of the app), beside the catalog agent."""

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
        self.lanes: dict[int, Lane] = {}
        self.lock = asyncio.Lock()
        self.generation = 0
        self.ready = False
        self.consumer: AIOKafkaConsumer | None = None
        self.restorer: AIOKafkaConsumer | None = None
        self.shared: AIOKafkaProducer | None = None
        self.last_sweep = time.monotonic()
        self.partition_counts: dict[str, int] = {}
        self.spread = 0  # round-robin partition for records without a key

    # -- clients ------------------------------------------------------------------------

    def producer(self, transactional_id: str | None) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=transactional_id or f"{self.settings.app_id}-route",
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            max_request_size=max(self.settings.max_message_bytes * 2, 1_048_576),
            # Back-to-back transactions meet CONCURRENT_TRANSACTIONS until the previous one's
            # markers are written; aiokafka's 100 ms default backoff then dominates latency.
            retry_backoff_ms=10,
            # A worker that dies inside a transaction and whose lane nobody takes over (no
            # other worker) blocks read_committed readers of its outputs this long at most.
            transaction_timeout_ms=self.settings.transaction_timeout_seconds * 1000,
            **client_options(self.settings.security),
        )

    def consumer_for(self, group_id: str | None) -> AIOKafkaConsumer:
        session_ms = self.settings.session_timeout_seconds * 1000
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"{self.settings.app_id}-{'route' if group_id else 'restore'}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 5),
            max_partition_fetch_bytes=max(self.settings.max_message_bytes, 1_048_576),
            # Bounded prefetch: what is fetched but not yet processed is resident memory.
            fetch_max_bytes=max(self.settings.max_message_bytes, 8_388_608),
            **client_options(self.settings.security),
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def on_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.restorer = self.consumer_for(None)
        await self.restorer.start()
        if not self.exactly_once:
            self.shared = self.producer(None)
            await self.shared.start()

    async def on_stop(self) -> None:
        # Under the lock: the batch in flight commits (or aborts) before anything closes.
        async with self.lock:
            self.ready = False
            if self.consumer is not None:
                await self.consumer.stop()  # leaves the group: partitions move at once
            for number in list(self.lanes):
                await self.close_lane(number)
            for client in (self.shared, self.restorer):
                if client is not None:
                    await client.stop()

    @Service.task
    async def _run(self) -> None:
        while not self.catalog_ready():  # decisions need the template catalog loaded
            await self.sleep(0.2)
        consumer = self.consumer = self.consumer_for(self.group)
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
            numbers = {tp.partition for tp in assigned}
            for number in sorted(set(self.lanes) - numbers):
                await self.close_lane(number)
            started = time.monotonic()
            for number in sorted(numbers - set(self.lanes)):
                self.lanes[number] = await self.open_lane(number)
            self.generation += 1
            self.ready = True
            log.info("route partitions assigned", extra={
                "event": "route_assignment", "partitions": sorted(numbers),
                "restore_seconds": round(time.monotonic() - started, 3)})

    async def open_lane(self, number: int) -> Lane:
        store = state_store.open_store(self.scheme, self.data_dir, number)
        await self.restore(store)
        lane = Lane(number, store)
        if self.exactly_once:
            lane.producer = await self.start_producer(number)
        return lane

    async def start_producer(self, number: int) -> AIOKafkaProducer:
        producer = self.producer(f"{self.settings.app_id}-route-{number}")
        await producer.start()  # InitProducerId: fences and aborts the previous owner's
        return producer

    async def close_lane(self, number: int) -> None:
        lane = self.lanes.pop(number)
        if lane.producer is not None:
            await stop_quietly(lane.producer)
        lane.store.close()

    async def restore(self, store: PartitionStore) -> None:
        """Bring the local store up to the committed end of its changelog partition."""
        assert self.restorer is not None
        restorer = self.restorer
        tp = TopicPartition(self.settings.changelog_topic, store.partition)
        restorer.assign([tp])
        end = (await restorer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
        start = store.checkpoint()
        if start > end:  # the changelog is shorter than what we hold: it was recreated
            log.warning("changelog behind the local state: restoring from scratch",
                        extra={"event": "restore_reset", "partition": store.partition})
            state_store.reset(store)
            start = 0
        if start >= end:
            return
        restorer.seek(tp, start)
        changes: dict[bytes, bytes | None] = {}
        applied = 0
        while await restorer.position(tp) < end:
            fetched = await restorer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in fetched.get(tp, ()):
                if record.offset < end and record.key is not None:
                    changes[record.key] = record.value
            if len(changes) >= 50_000:
                applied += len(changes)
                store.restore(changes, await restorer.position(tp))
                changes = {}
        applied += len(changes)
        store.restore(changes, end)
        log.info("state restored", extra={"event": "restore", "partition": store.partition,
                                          "from": start, "to": end, "keys": applied})

    # -- processing ---------------------------------------------------------------------

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        by_lane: dict[int, dict[TopicPartition, list[ConsumerRecord]]] = defaultdict(dict)
        for tp, records in batches.items():
            if records:
                by_lane[tp.partition][tp] = records
        await asyncio.gather(*(self.commit_lane(number, records)
                               for number, records in by_lane.items()))

    async def commit_lane(self, number: int,
                          batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        lane = self.lanes.get(number)
        if lane is None:
            return
        fetched, now = time.monotonic(), time.time()
        out: list[Output] = []
        tally: Tally = Counter()
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        try:
            if lane.failed:
                await self.repair(lane)
            for records in batches.values():
                for record in records:
                    self.router.handle(as_record(record, fetched), lane.store, out, tally, now)
            await self.produce(lane, out, offsets)
        except Exception as exc:  # broker gone, fenced, timed out...: nothing is kept
            lane.store.aborted()
            lane.failed = True
            self.metrics.transactions.labels("aborted").inc()
            log.warning("batch of partition %d not committed (%s: %s); it will be read again",
                        number, type(exc).__name__, exc, extra={
                            "event": "batch_aborted", "partition": number})
            assert self.consumer is not None
            for tp, records in batches.items():
                self.consumer.seek(tp, records[0].offset)
            await asyncio.sleep(RETRY_SECONDS)
            return
        self.router.counted(tally)
        self.metrics.transactions.labels("committed").inc()
        self.metrics.batch_records.observe(sum(len(r) for r in batches.values()))

    async def produce(self, lane: Lane, out: Sequence[Output],
                      offsets: dict[TopicPartition, int]) -> None:
        changelog = self.settings.changelog_topic
        if self.exactly_once:
            producer = lane.producer
            assert producer is not None
            await producer.begin_transaction()
            sent = await self.send_batches(producer, out)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group)
            await producer.commit_transaction()
        else:
            assert self.shared is not None and self.consumer is not None
            sent = await self.send_batches(self.shared, out)
            await asyncio.gather(*(future for _, future, _ in sent))
            if offsets:
                await self.consumer.commit(offsets)
        # The changelog's next offset after this batch: the local checkpoint.
        last = max((future.result().offset + count - 1 for topic, future, count in sent
                    if topic == changelog), default=-1)
        lane.store.committed(max(last + 1, lane.store.checkpoint()))

    async def send_batches(self, producer: AIOKafkaProducer, out: Sequence[Output]
                           ) -> list[tuple[str, asyncio.Future[Any], int]]:
        """Hand the outputs to the producer one batch per topic partition: aiokafka's send()
        per record costs more than routing the record did. Returns (topic, future, records)."""
        open_batches: dict[tuple[str, int], tuple[Any, int]] = {}
        sent: list[tuple[str, asyncio.Future[Any], int]] = []
        for output in out:
            partition = output.partition
            if partition is None:
                partition = await self.partition_of(producer, output)
            slot = (output.topic, partition)
            batch, count = open_batches.get(slot) or (producer.create_batch(), 0)
            headers = list(output.headers)
            if batch.append(key=output.key, value=output.value, timestamp=None,
                            headers=headers) is None:  # full: send it, start the next one
                sent.append((output.topic, await producer.send_batch(
                    batch, output.topic, partition=partition), count))
                batch, count = producer.create_batch(), 0
                if batch.append(key=output.key, value=output.value, timestamp=None,
                                headers=headers) is None:
                    raise ValueError(f"a record for {output.topic} is larger than a batch")
            open_batches[slot] = (batch, count + 1)
        for (topic, partition), (batch, count) in open_batches.items():
            sent.append((topic, await producer.send_batch(batch, topic, partition=partition),
                         count))
        return sent

    async def partition_of(self, producer: AIOKafkaProducer, output: Output) -> int:
        """Where the default partitioner would put it (murmur2 of the key, as Java's)."""
        count = self.partition_counts.get(output.topic)
        if count is None:
            count = self.partition_counts[output.topic] = len(
                await producer.partitions_for(output.topic))
        if output.key is None:
            self.spread += 1
            return self.spread % count
        return partition_for_bytes(output.key, count)

    async def repair(self, lane: Lane) -> None:
        """After a failed transaction: a fresh producer (the old one may be fenced or stuck)."""
        if lane.producer is not None:
            await stop_quietly(lane.producer)
            lane.producer = None
            lane.producer = await self.start_producer(lane.partition)
        lane.failed = False

    async def maybe_sweep(self) -> None:
        if time.monotonic() - self.last_sweep < self.settings.state_sweep_seconds:
            return
        self.last_sweep = time.monotonic()
        now = time.time()
        for lane in list(self.lanes.values()):
            try:
                await self.produce(lane, self.router.sweep(lane.store, now), {})
            except Exception as exc:
                lane.store.aborted()
                lane.failed = True
                log.warning("state sweep of partition %d not committed (%s)", lane.partition,
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


async def stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(client.stop(), timeout=10)
    except Exception as exc:  # already broken: nothing more to do with it
        log.info("client stop failed: %s", type(exc).__name__)
