"""StreamThread: the route loop, a thread of its own: poll -> tasks -> one transaction.

Why not a Faust agent: with a backlog and a second worker joining, Faust 0.15 committed input
offsets past records its route agent never processed (about 20,000 of 95,272 decisions were
lost, reproduced in issue 3), and its exactly-once mode has open reports of duplicates. This
loop does what Kafka Streams' exactly-once v2 does (KIP-447):

- one consumer group over the outbound, state, webhooks and repartition topics, read with
  read_committed and a range assignor, so a worker owns the same partition numbers of every
  topic (co-partitioning); per owned partition number a task (engine.task) with its state
  store;
- one transactional producer per worker, `<app id>-route-<process id>` (the process id is kept
  in the data directory, so a restarted worker fences its previous life at once); per polled
  batch one transaction holds every task's outputs and the input offsets, sent with the
  consumer's group metadata: a worker that lost its partitions in a rebalance cannot commit
  offsets for them any more (the broker checks the generation), so no zombie decides twice;
- batches are what has arrived, up to OUTBOUND_GATE_BATCH_RECORDS: one record when traffic is
  light (the decision is out after one commit), full batches under a backlog.

It runs on its own thread, with confluent-kafka (librdkafka): its calls block outside the GIL
and its heartbeats run in librdkafka's threads, so the Faust event loop (web, catalog, policy
feed) stays responsive while a batch commits. Rebalance callbacks run on this thread inside
poll, between batches: nothing is in flight when partitions move.

With OUTBOUND_GATE_PROCESSING_GUARANTEE=at_least_once the producer is idempotent, not
transactional, and offsets are committed after the outputs are acknowledged (a crash can repeat
a decision).

The loop's state is an explicit State (as Kafka Streams' StreamThread.State), changed only on
this thread; /readyz and the query server read committed state only while it is RUNNING.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from mode import Service

from processors.runtime import kafka_clients
from processors.runtime.engine import changelog_reader, state_store
from processors.runtime.engine.changelog_reader import ChangelogReader
from processors.runtime.engine.processor import LoopMetrics, Processor
from processors.runtime.engine.record_collector import RecordCollector
from processors.runtime.engine.records import Record, Tally
from processors.runtime.engine.task import Offsets, StreamTask, first_offsets, next_offsets
from processors.runtime.engine.task_manager import TaskManager
from processors.settings import Settings

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # pause after a batch that failed, before it is read again
POLL_SECONDS = 0.2  # longest wait for a first record (the stop flag is checked in between)
LAG_SECONDS = 10.0  # how often the input lag per partition is measured
KAFKA_CALL_SECONDS = 30.0  # longest wait for one transactional call
PHASES = ("process", "produce", "commit", "store")  # of a batch (metrics: batch_phase)


class State(enum.Enum):
    """Where the route loop is, as Kafka Streams' StreamThread.State:

    CREATED -> STARTING (clients opening, waiting for the catalog, subscribed) -> then, per
    rebalance, PARTITIONS_REVOKED (nothing held is readable) and PARTITIONS_ASSIGNED (stores
    opening and restoring) -> RUNNING (the assigned stores are restored and readable: the
    worker is ready) -> PENDING_SHUTDOWN (closing its clients and stores) -> DEAD.
    PENDING_SHUTDOWN is reachable from every live state (a stop, or a crash)."""

    CREATED = "created"
    STARTING = "starting"
    PARTITIONS_REVOKED = "partitions_revoked"
    PARTITIONS_ASSIGNED = "partitions_assigned"
    RUNNING = "running"
    PENDING_SHUTDOWN = "pending_shutdown"
    DEAD = "dead"


# The legal changes, adapted from Kafka Streams': here an assignment restores its stores within
# one callback, so PARTITIONS_ASSIGNED and RUNNING never follow themselves. Each change is made
# in one place of RouteLoop: run, on_revoke/on_lost, on_assign, close.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CREATED: frozenset({State.STARTING, State.PENDING_SHUTDOWN}),
    State.STARTING: frozenset({
        State.PARTITIONS_REVOKED, State.PARTITIONS_ASSIGNED, State.PENDING_SHUTDOWN}),
    # Revoked twice: partitions lost (session expired), then revoked as the group rejoins.
    State.PARTITIONS_REVOKED: frozenset({
        State.PARTITIONS_REVOKED, State.PARTITIONS_ASSIGNED, State.PENDING_SHUTDOWN}),
    State.PARTITIONS_ASSIGNED: frozenset({
        State.PARTITIONS_REVOKED, State.RUNNING, State.PENDING_SHUTDOWN}),
    State.RUNNING: frozenset({
        State.PARTITIONS_REVOKED, State.PARTITIONS_ASSIGNED, State.PENDING_SHUTDOWN}),
    State.PENDING_SHUTDOWN: frozenset({State.DEAD}),
    State.DEAD: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the route loop never makes: a bug."""


class StreamThread(Service):
    """The Faust service that starts and stops the route loop's thread with the worker."""

    def __init__(self, settings: Settings, processor: Processor, metrics: LoopMetrics,
                 catalog_ready: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop_: RouteLoop = RouteLoop(settings, processor, metrics, catalog_ready)
        self.thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.loop_.ready

    def reader(self, partition: int) -> Callable[[str], Any] | None:
        """Partition's committed state for a check, or None if it is not held here (or is
        being restored or handed over): readable from any thread."""
        return self.loop_.reader(partition)

    def on_readable(self, announce: Callable[[tuple[int, ...]], None]) -> None:
        """announce(partitions) is called, from the stream thread, whenever the partitions
        whose committed state may be read change: () while partitions move."""
        self.loop_.announce = announce

    @property
    def owned(self) -> tuple[int, ...]:
        """The partition numbers this worker holds (a snapshot: read from other threads)."""
        return self.loop_.assigned

    async def on_started(self) -> None:
        loop = asyncio.get_running_loop()

        def crashed(exc: BaseException) -> None:  # a bug in the loop: the worker stops
            asyncio.run_coroutine_threadsafe(self.crash(exc), loop)

        self.thread = threading.Thread(target=self.loop_.run, args=(crashed,),
                                       name="stream-thread", daemon=True)
        self.thread.start()

    async def on_stop(self) -> None:
        self.loop_.request_stop()
        if self.thread is not None:
            # The batch in flight commits (or aborts) before the thread closes its clients.
            await asyncio.to_thread(self.thread.join)


class RouteLoop:
    """What runs on the stream thread: the consumer, the producer, the tasks."""

    def __init__(self, settings: Settings, processor: Processor, metrics: LoopMetrics,
                 catalog_ready: Callable[[], bool]) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.catalog_ready = catalog_ready
        self.group = settings.route_group
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self.data_dir = Path(settings.data_dir).resolve() / settings.app_id / "route"
        self.scheme = settings.store.split(":", 1)[0]
        self.state = State.CREATED  # changed on the stream thread only (transition)
        # Set from another thread to stop the loop; also wakes its pauses.
        self.stop_requested = threading.Event()
        self.assigned: tuple[int, ...] = ()
        self.collector = RecordCollector(settings.changelog_topic)
        # The phase histograms' children, looked up once (labels() takes a lock).
        self.phase_seconds = {phase: metrics.batch_phase.labels(phase) for phase in PHASES}
        self.consumer: Consumer | None = None
        self.restorer: Consumer | None = None  # reads changelog partitions, no group
        self.producer: Producer | None = None
        self.tasks: TaskManager | None = None
        self.last_sweep = self.last_lag = time.monotonic()
        self.rebalances = 0  # partitions revoked or assigned so far (poll drops a torn read)
        # Told the partitions whose committed state may be read now, each time that changes
        # (from this thread): the query server answers checks for exactly these.
        self.announce: Callable[[tuple[int, ...]], None] = lambda _: None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The assigned partitions are restored and their committed state readable."""
        return self.state is State.RUNNING

    def transition(self, new: State) -> bool:
        """Moves to `new` and logs it; raises IllegalTransition for a change the loop never
        makes. As in Kafka Streams, once shutting down only DEAD follows: a change asked for
        then (consumer.close() revokes the partitions), or once DEAD, is ignored and returns
        False."""
        old = self.state
        if old is State.DEAD or (old is State.PENDING_SHUTDOWN and new is not State.DEAD):
            return False
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"route loop: {old.name} -> {new.name}")
        self.state = new
        log.info("stream thread %s -> %s", old.name, new.name, extra={
            "event": "stream_state", "from": old.value, "to": new.value})
        return True

    def request_stop(self) -> None:
        """From any thread: the loop finishes (commits or aborts) its batch, then closes."""
        self.stop_requested.set()

    def run(self, crashed: Callable[[BaseException], None]) -> None:
        try:
            self.transition(State.STARTING)
            self.start()
            while not self.stop_requested.is_set():
                self.run_once()
        except BaseException as exc:
            log.exception("route loop failed", extra={"event": "route_failed"})
            crashed(exc)
        finally:
            self.close()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.restorer = changelog_reader.restore_consumer(self.settings)
        tasks = self.tasks = TaskManager(
            lambda number: state_store.open_store(self.scheme, self.data_dir, number),
            ChangelogReader(self.restorer, self.settings.changelog_topic))

        def local(number: int) -> state_store.PartitionStore | None:
            task = tasks.tasks.get(number)
            return None if task is None else task.store

        self.processor.attach(local)  # the processor runs on this thread only
        while not self.catalog_ready():  # decisions need the template catalog loaded
            if self.stop_requested.wait(0.2):
                return
        self.producer = self.new_producer()
        consumer = self.consumer = kafka_clients.route_consumer(self.settings, self.group)
        consumer.subscribe(self.processor.sources, on_assign=self.on_assign,
                           on_revoke=self.on_revoke, on_lost=self.on_lost)
        log.info("route processor started", extra={
            "event": "route_start", "group": self.group,
            "guarantee": self.settings.processing_guarantee})

    def new_producer(self) -> Producer:
        transactional_id = (f"{self.settings.app_id}-route-{self.process_id()}"
                            if self.exactly_once else None)
        producer = kafka_clients.route_producer(self.settings, transactional_id,
                                                self.collector.delivered)
        while transactional_id is not None:
            # Fences this worker's previous life and aborts the transaction it left open.
            try:
                producer.init_transactions(self.settings.transaction_timeout_seconds * 2)
                break
            except KafkaException as exc:
                # A broker down longer than the timeout (make chaos saw 106 s): the call is
                # retriable, and resumes where it stopped. Anything else is fatal.
                error = exc.args[0]
                if self.stop_requested.is_set() or not (
                        error.retriable() or error.code() == KafkaError._TIMED_OUT):
                    raise
                log.warning("producer's transactions not initialised (%s): retrying", error,
                            extra={"event": "producer_init_retry"})
        return producer

    def process_id(self) -> str:
        """Stable across restarts on the same data directory (as Kafka Streams' process id)."""
        path = self.data_dir / "process-id"
        if not path.exists():
            path.write_text(uuid.uuid4().hex)
        return path.read_text().strip()

    def close(self) -> None:
        self.transition(State.PENDING_SHUTDOWN)
        self.announce(())
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group: partitions move at once
            except Exception as exc:
                log.debug("consumer close: %s", exc)
        if self.tasks is not None:
            self.tasks.close_all()
        if self.restorer is not None:
            self.restorer.close()
        if self.producer is not None:
            self.producer.flush(5)
        self.transition(State.DEAD)

    def reader(self, partition: int) -> Callable[[str], Any] | None:
        tasks = self.tasks
        task = tasks.tasks.get(partition) if tasks is not None and self.ready else None
        if task is None:
            return None
        store = task.store
        return self.processor.committed_reader(store)

    # -- rebalances (on this thread, inside poll, between batches) -------------------------

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.transition(State.PARTITIONS_REVOKED)
        self.rebalances += 1
        self.announce(())
        self.metrics.rebalances.inc()
        self.processor.released({tp.partition for tp in partitions})
        self.metrics.input_lag.clear()  # the new owners report their partitions

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("route partitions lost (session expired)", extra={
            "event": "route_lost", "partitions": sorted({tp.partition for tp in partitions})})
        self.on_revoke(consumer, partitions)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self.tasks is not None
        self.rebalances += 1
        # No check reads a store while it opens, restores or closes.
        self.transition(State.PARTITIONS_ASSIGNED)
        self.announce(())
        numbers = {tp.partition for tp in partitions}
        if partitions and self.exactly_once:
            # Committed offsets asked for read_committed wait until no transaction is pending
            # on them (KIP-447: UNSTABLE_OFFSET_COMMIT is retried): a transaction of the
            # previous owner that committed offsets is complete, its changelog records are
            # below the end the restore reads to.
            consumer.committed(partitions, timeout=self.settings.transaction_timeout_seconds * 3)
        restoring = self.tasks.assign(numbers)
        self.assigned = tuple(sorted(numbers))
        self.transition(State.RUNNING)
        self.announce(self.assigned)
        log.info("route partitions assigned", extra={
            "event": "route_assignment", "partitions": sorted(numbers),
            "restore_seconds": round(restoring, 3)})

    # -- processing ---------------------------------------------------------------------

    def poll(self) -> list[Message]:
        """What has arrived, up to a batch: waits only while nothing has."""
        assert self.consumer is not None
        consumer, limit, rebalances = self.consumer, self.settings.batch_records, self.rebalances
        messages: list[Message] = consumer.consume(limit, 0)
        if not messages:
            messages = consumer.consume(1, POLL_SECONDS)
            if messages and limit > 1:
                messages += consumer.consume(limit - 1, 0)
        if self.rebalances != rebalances:
            # Partitions moved inside consume (between its calls above): what was read before
            # may be read again from the committed offsets (here or by the new owner), and
            # deciding it now could decide it twice. The whole read is put back: read again
            # from its first records.
            first: Offsets = {}
            for message in messages:
                if message.error() is None:
                    key, offset = (message.topic(), message.partition()), message.offset()
                    first[key] = min(first.get(key, offset), offset)
            self.rewind(first)
            return []
        return messages

    def run_once(self) -> None:
        messages = self.poll()
        fetched, now = time.monotonic(), time.time()
        records = []
        for message in messages:
            if message.error() is not None:
                log.warning("input not read: %s", message.error(),
                            extra={"event": "consume_error"})
                continue
            records.append(Record(message.topic(), message.partition(), message.offset(),
                                  message.key(), message.value(), message.timestamp()[1] / 1000.0,
                                  message.headers() or (), fetched))
        if records:
            if not self.catalog_ready():
                # Faust's group is rebalancing and the catalog table may be recovering:
                # decide nothing until it is whole again.
                self.rewind(first_offsets(records))
                self.stop_requested.wait(0.2)
            else:
                self.process(records, now)
        self.maybe_sweep()
        self.maybe_measure_lag()

    def process(self, records: list[Record], now: float) -> None:
        assert self.tasks is not None
        owned = self.tasks.tasks
        by_task: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_task[record.partition].append(record)
        if not by_task.keys() <= owned.keys():  # fetched before a rebalance: not ours now
            records = [record for record in records if record.partition in owned]
        tasks = [(owned[n], batch) for n, batch in by_task.items() if n in owned]
        try:
            tally, phases = self.commit(tasks, now, next_offsets(records))
        except Exception as exc:  # broker gone, fenced, timed out...: nothing is kept
            self.failed(tasks, exc)
            self.rewind(first_offsets(records))
            self.stop_requested.wait(RETRY_SECONDS)
            return
        self.processor.counted(tally)
        self.metrics.transactions.labels("committed").inc()
        self.metrics.batch_records.observe(len(records))
        for phase, seconds in phases.items():
            self.phase_seconds[phase].observe(seconds)

    def commit(self, tasks: list[tuple[StreamTask, list[Record]]], now: float,
               offsets: Offsets) -> tuple[Tally, dict[str, float]]:
        """One transaction (exactly-once) for every task's share of the batch, or outputs
        acknowledged then offsets committed (at-least-once). Raises if it did not commit.
        Returns what the batch did and how long each of its phases took (seconds)."""
        assert self.producer is not None and self.consumer is not None
        producer, tally = self.producer, Tally()
        started = time.perf_counter()
        if self.exactly_once:
            producer.begin_transaction()
        for task, batch in tasks:
            out, counts = task.process(self.processor, batch, now)
            tally.update(counts)
            self.collector.send(producer, out)
        out = []
        try:  # every state the batch changed, staged once, its changelog record with it
            self.processor.flush(out)
        except BaseException:
            self.processor.forget()
            raise
        self.collector.send(producer, out)
        processed = time.perf_counter()
        changelog_ends = self.collector.flush(producer)
        produced = time.perf_counter()
        positions = [TopicPartition(topic, partition, offset)
                     for (topic, partition), offset in offsets.items()]
        if self.exactly_once:
            if positions:
                producer.send_offsets_to_transaction(
                    positions, self.consumer.consumer_group_metadata(), KAFKA_CALL_SECONDS)
            producer.commit_transaction(KAFKA_CALL_SECONDS)
        elif positions:
            self.consumer.commit(offsets=positions, asynchronous=False)
        committed = time.perf_counter()
        for task in self.touched(tasks):
            task.committed(changelog_ends)
        return tally, {"process": processed - started, "produce": produced - processed,
                       "commit": committed - produced,
                       "store": time.perf_counter() - committed}

    def touched(self, tasks: list[tuple[StreamTask, list[Record]]]) -> list[StreamTask]:
        """The batch's tasks, and any other of this worker's tasks whose store the batch
        changed (a tenant's messaging-limit count, stepped into directly)."""
        assert self.tasks is not None
        batch = [task for task, _ in tasks]
        return batch + [task for task in self.tasks.tasks.values()
                        if task.store.pending and task not in batch]

    def failed(self, tasks: list[tuple[StreamTask, list[Record]]], exc: Exception) -> None:
        for task in self.touched(tasks):
            task.abort()
        self.metrics.transactions.labels("aborted").inc()
        log.warning("batch not committed (%s: %s); it will be read again",
                    type(exc).__name__, exc, extra={
                        "event": "batch_aborted",
                        "partitions": sorted({task.partition for task, _ in tasks})})
        assert self.producer is not None
        fatal = isinstance(exc, KafkaException) and exc.args[0].fatal()
        if self.exactly_once and not fatal:
            try:
                self.producer.abort_transaction(KAFKA_CALL_SECONDS)
            except KafkaException as abort_error:
                fatal = True
                log.warning("transaction not aborted (%s): a new producer",
                            abort_error.args[0], extra={"event": "producer_renewed"})
        self.producer.flush(5)  # serve the purged records' reports before the next batch
        self.collector.reset()
        if fatal:
            self.producer = self.new_producer()

    def rewind(self, first: Offsets) -> None:
        """Read the partitions of an unprocessed batch again from its first records."""
        assert self.consumer is not None
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:  # else someone else's now: committed offsets
                try:
                    self.consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as exc:
                    log.warning("seek failed (%s): the partition is re-read from its "
                                "committed offset", exc.args[0])

    def maybe_sweep(self) -> None:
        if time.monotonic() - self.last_sweep < self.settings.state_sweep_seconds:
            return
        self.last_sweep = time.monotonic()
        assert self.tasks is not None and self.producer is not None
        now = time.time()
        for task in list(self.tasks.tasks.values()):
            # One transaction a chunk: a sweep that changes a whole partition holds one chunk's
            # changes in memory at a time, not the partition's.
            for chunk in self.processor.sweep(task.store, now):
                try:
                    if self.exactly_once:
                        self.producer.begin_transaction()
                    self.collector.send(self.producer, chunk)
                    ends = self.collector.flush(self.producer)
                    if self.exactly_once:
                        self.producer.commit_transaction(KAFKA_CALL_SECONDS)
                    task.committed(ends)
                except Exception as exc:
                    self.failed([(task, [])], exc)
                    break  # the rest waits for the next sweep

    def maybe_measure_lag(self) -> None:
        """Input records not yet processed, per owned partition: end offset - position.
        The ends come with every fetch, so this asks the broker nothing."""
        if time.monotonic() - self.last_lag < LAG_SECONDS or not self.ready:
            return
        self.last_lag = time.monotonic()
        consumer = self.consumer
        assert consumer is not None
        try:
            for tp in consumer.position(consumer.assignment()):
                _, end = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and end >= 0:
                    self.metrics.input_lag.labels(tp.topic, str(tp.partition)).set(
                        max(0, end - tp.offset))
        except KafkaException as exc:  # rebalancing or broker away: measured next time
            log.debug("lag not measured: %s", exc.args[0])

