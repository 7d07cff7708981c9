"""`make bench`: the gate against the ceiling and two peers, on the same broker and data.

    .venv/bin/python -m tests.benchmarks.throughput [--events 1000000] [--quick]
        [--bsuid-share 0.10] [--number-changes 0.05] [--ab TREE [TREE ...] --pairs N]

Preloads N input records made by processors.tools.loadgen (plus the catalog) into fresh topics: its
identity mix (about 10% of the messages to business-scoped user IDs, some state events naming a
BSUID alone, some linking a number and a BSUID; --bsuid-share 0 for the phone-only workload, to
see what linking costs), then
runs, one after the other, each contender from the earliest offset with its own consumer group:
  ceiling      a batched confluent-kafka consume -> produce copy, no processing
  gate         the real outbound-gate worker
  faust_plain  the same rules as a one-event-at-a-time Faust agent (Faust's documented style)
  quix         the same rules as a Quix Streams application
  gate_at_least_once  the gate without transactions (the cost of exactly-once)
  gate_2_workers      two gate workers in one group (full runs only)
  gate_limits  the gate with Meta's messaging limit pinned for every tenant
               (--messaging-limit, 10,000 new users a day): the tenant stage's cost
Throughput is input records / (time from the first output to the last): for the peers on the
wall clock, polling the output topics' end offsets; for the gate, whose outputs are
transactional, from the timestamps of the records a read_committed consumer counts (end offsets
would also count commit markers). Start-up and group joins are not counted.
Then the gate alone at a steady offered rate of half its maximum, and at 1,000/s, gives
end-to-end latency: from the input record's send time to the moment a read_committed consumer
of the outputs receives the decision (the commit included). The first 10 s of each latency run
are sent but not sampled (a new worker's first transactions wait on the broker; their worst is
warm_up_max_ms). The same two rates through txn_floor, an exactly-once copy loop with no
processing, give the floor: the latency this broker and machine allow any exactly-once processor.
--latency-only RATE runs only the latency stages, the gate with and without messaging limits
in ABBA order.
Writes tests/benchmarks/results/latest.json (quick.json with --quick) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from processors.core.policy import PolicySet, load_policy
from processors.runtime import kafka_clients
from processors.runtime.engine.stream_thread import PHASES
from processors.runtime.topics import create_missing
from processors.tools.loadgen import BSUID_SHARE, NUMBER_CHANGES, Workload, identity_mix
from tests.e2e import conftest as harness
from tests.factories import policy_with

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("outbound", "statuses", "inbound", "preferences", "templates")
PARTITIONS = 8
# Seconds of a latency run sent but not sampled: a new worker's first transactions wait on
# the broker (seen 1-4 s: the coordinator answers CONCURRENT_TRANSACTIONS while the previous
# commit completes); its worst is reported as warm_up_max_ms.
WARMUP_SECONDS = 10.0
PEERS = {"ceiling": "tests.benchmarks.peers.ceiling",
         "faust_plain": "tests.benchmarks.peers.faust_plain",
         "quix": "tests.benchmarks.peers.quix_app"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]],
            rate: float = 0.0, linger_ms: float | None = None,
            acked: dict[str, float] | None = None) -> dict[str, float]:
    """Produce (topic, key, value); returns message_id -> send time (ms) for outbound JSON.
    With `acked` (paced runs), fills it with message_id -> when the broker's acknowledgement
    reached the producer (ms): how late the input itself arrived."""
    # murmur2_random: Kafka's default (Java) partitioner, which kafka-python and the gate's
    # producer helper use too; librdkafka's own default (CRC32) would put most keyed records
    # off their home partition and make the gate re-key them.
    # Paced (latency) runs send each record at once, as a help desk's producer would: the
    # time a record waits in the sender's batch is not the gate's.
    linger = linger_ms if linger_ms is not None else 1 if rate else 10
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger,
                         "partitioner": "murmur2_random",
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
    sent: dict[str, float] = {}
    started = time.monotonic()
    for index, (topic, key, value) in enumerate(records, start=1):
        now_ms = time.time() * 1000
        message_id = orjson.loads(value)["message_id"] \
            if rate and value and value.startswith(b'{"schema_version"') else None
        on_delivery = None if acked is None or message_id is None else partial(
            note_ack, acked, message_id)
        while True:
            try:
                producer.produce(topic, key=key, value=value, timestamp=int(now_ms),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        if message_id is not None:
            sent[message_id] = now_ms
        producer.poll(0)
        if rate:
            ahead = index / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing of the steady offered rate
    producer.flush(60)
    return sent


def note_ack(acked: dict[str, float], message_id: str, error: Any, _: Any) -> None:
    if error is None:
        acked[message_id] = time.time() * 1000


def drop_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics a run made: its inputs, the contenders' outputs and internal topics,
    all named with its prefix (Quix's changelogs after a `changelog__`). A broker that keeps
    every run's partitions answers later runs more slowly: with 8,040 of them left over, a
    latency run's p99 at 1,000/s was 99-120 ms against 72-86 ms on a fresh broker
    (ee3fbef:docs/performance.md, "Third look")."""
    admin = kafka_clients.admin(bootstrap)
    try:
        names = [name for name in admin.list_topics() if prefix in name]
        if names:
            admin.delete_topics(names, timeout_ms=60_000)
            log(f"  deleted {len(names)} topics of {prefix}")
    except KafkaError as exc:  # the figures are taken: a leftover topic is only untidy
        log(f"  topics of {prefix} not deleted: {exc!r}")
    finally:
        admin.close()


def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(t, p) for t in topics
                  for p in consumer.partitions_for_topic(t) or ()]
    ends: dict[TopicPartition, int] = consumer.end_offsets(partitions)
    consumer.close()
    return ends


def wait_outputs(bootstrap: str, topics: list[str], expected: int, process: Any,
                 timeout: float) -> float:
    """Wait until the output topics hold `expected` records; returns the processing span.

    The span runs from the first poll that sees any output to the first that sees them all,
    on the wall clock (record timestamps cannot be used: Quix copies the input timestamp).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(t, p) for t in topics
                  for p in consumer.partitions_for_topic(t) or ()]
    deadline = time.monotonic() + timeout
    first: float | None = None
    last_report = 0.0
    try:
        while True:
            done = sum(consumer.end_offsets(partitions).values())
            now = time.monotonic()
            if done and first is None:
                first = now
            if done >= expected and first is not None:
                return max(now - first, 1e-3)
            if process.poll() is not None:
                raise SystemExit(f"contender exited with {process.returncode} at "
                                 f"{done}/{expected}")
            if now > deadline:
                raise SystemExit(f"timed out: {done}/{expected} outputs")
            if now - last_report > 10:
                log(f"    {done:,} / {expected:,} outputs")
                last_report = now
            time.sleep(0.1)  # poll interval of a measured wait with a deadline
    finally:
        consumer.close()


def wait_committed(bootstrap: str, topics: list[str], expected: int,
                   processes: list[Any], timeout: float) -> float:
    """The gate's outputs are transactional: count what read_committed consumers see (end
    offsets also count commit markers and aborted attempts). Returns the span between the
    first and the last output record's timestamp."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([ConfluentPartition(t, p) for t in topics for p in range(PARTITIONS)])
    deadline = time.monotonic() + timeout
    seen, first, last = 0, float("inf"), 0.0
    last_report = time.monotonic()
    try:
        while seen < expected:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error():
                    continue
                seen += 1
                stamp = message.timestamp()[1]
                first, last = min(first, stamp), max(last, stamp)
            now = time.monotonic()
            for process in processes:
                if process.poll() is not None:
                    raise SystemExit(f"gate exited with {process.returncode} at "
                                     f"{seen}/{expected}")
            if now > deadline:
                raise SystemExit(f"timed out: {seen}/{expected} committed outputs")
            if now - last_report > 10:
                log(f"    {seen:,} / {expected:,} outputs")
                last_report = now
    finally:
        consumer.close()
    return max((last - first) / 1000.0, 1e-3)


PEER_READY_SECONDS = 120.0  # a peer's first rebalance (and its tables' recovery)


def run_peer(name: str, bootstrap: str, prefix: str, expected: int, timeout: float) -> float:
    """A peer's span over the preloaded data. A peer whose start-up hangs (a Faust app's first
    rebalance now and then never ends) is started once more, in a group of its own."""
    output = f"{prefix}.out.{name}"
    create_missing(bootstrap, [output], PARTITIONS)
    for attempt in (1, 2):
        # The peer's log, so that a peer that stops producing says why.
        handle, log_path = tempfile.mkstemp(prefix=f"peer-{name}-", suffix=".log")
        os.close(handle)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", PEERS[name], "--bootstrap", bootstrap, "--prefix",
                 prefix, "--group", f"{prefix}.{name}.{attempt}", "--output", output,
                 "--partitions", str(PARTITIONS)],
                stdout=subprocess.PIPE, stderr=log_file)
        try:
            if not announced_ready(process, PEER_READY_SECONDS) and attempt == 1:
                log(f"  {name} not ready after {PEER_READY_SECONDS:.0f} s; started again "
                    f"(its log: {log_path})")
                continue
            return wait_outputs(bootstrap, [output], expected, process, timeout)
        except SystemExit:
            tail = Path(log_path).read_text(errors="replace")[-3000:]
            log(f"  {name}'s log ({log_path}), its end:\n{tail}")
            raise
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    raise AssertionError("unreachable: the second attempt returns or raises")


def announced_ready(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the process printed READY within `seconds` (its stdout's first line)."""
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        if process.stdout.readline().strip() == b"READY":
            seen.set()

    threading.Thread(target=read, name="peer-ready", daemon=True).start()
    return seen.wait(seconds)


def gate_env(prefix: str, tag: str) -> dict[str, str]:
    return {
        "OUTBOUND_GATE_TOPIC_OUTBOUND": f"{prefix}.outbound",
        "OUTBOUND_GATE_TOPIC_STATUSES": f"{prefix}.statuses",
        "OUTBOUND_GATE_TOPIC_INBOUND": f"{prefix}.inbound",
        "OUTBOUND_GATE_TOPIC_PREFERENCES": f"{prefix}.preferences",
        "OUTBOUND_GATE_TOPIC_TEMPLATES": f"{prefix}.templates",
        "OUTBOUND_GATE_TOPIC_ACCEPTED": f"{prefix}.{tag}.accepted",
        "OUTBOUND_GATE_TOPIC_REJECTED": f"{prefix}.{tag}.rejected",
        "OUTBOUND_GATE_TOPIC_DLQ": f"{prefix}.{tag}.dlq",
        "OUTBOUND_GATE_TOPIC_POLICY": f"{prefix}.{tag}.policy",
        "OUTBOUND_GATE_TOPIC_WEBHOOKS": f"{prefix}.{tag}.webhooks",
        "OUTBOUND_GATE_APP_ID": f"{prefix}-{tag}",
        "OUTBOUND_GATE_PARTITIONS": str(PARTITIONS),
        "OUTBOUND_GATE_LOG_LEVEL": "warning",
    }


def start_gate(bootstrap: str, prefix: str, tag: str, workers: int = 1,
               extra: dict[str, str] | None = None) -> tuple[list[harness.Gate], list[str]]:
    """workers gate processes in one consumer group, all ready."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{tag}-"))
    env = {**gate_env(prefix, tag), **(extra or {})}
    gates = [harness.start_worker(bootstrap, tmp, uuid.uuid4().hex[:8], env, wait=False,
                                  name=f"worker-{index}") for index in range(workers)]
    for gate in gates:
        harness.wait_ready(gate, timeout=300)
    outputs = [env["OUTBOUND_GATE_TOPIC_ACCEPTED"], env["OUTBOUND_GATE_TOPIC_REJECTED"],
               env["OUTBOUND_GATE_TOPIC_DLQ"]]
    return gates, outputs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far by kind of thread: the main thread (Faust's event loop), the other
    Python threads (the stream thread among them), librdkafka's and RocksDB's; user time under
    the kind's name, system time under "<kind> sys"."""
    ticks: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        kind = "main" if task.name == str(pid) else "rdkafka" if name.startswith("rdk:") \
            else "rocksdb" if name.startswith("rocksdb") else "python"
        ticks[kind] = ticks.get(kind, 0) + int(fields[11])
        ticks[f"{kind} sys"] = ticks.get(f"{kind} sys", 0) + int(fields[12])
    clock = os.sysconf("SC_CLK_TCK")
    return {kind: count / clock for kind, count in ticks.items()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Visibility(threading.Thread):
    """A read_committed consumer of the outputs that notes when each decision became visible
    to it (the latency a reader of the gate's outputs sees, commit included)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(name="visibility", daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"bench-lat-{uuid.uuid4()}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
        self.consumer.assign([ConfluentPartition(t, p, 0) for t in topics
                              for p in range(PARTITIONS)])
        self.seen: dict[str, float] = {}  # message_id -> visible at (ms, wall clock)
        # message_id -> the output record's timestamp (ms): when the worker produced it, in
        # the transaction that made it visible; unlike `seen`, no wait of this reader's in it.
        self.produced: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # consume(n, timeout) waits for n records or the timeout: wait for one, then
            # take what else has arrived, so no record waits for the batch to fill.
            first = self.consumer.consume(num_messages=1, timeout=0.05)
            for message in first + (self.consumer.consume(1000, 0) if first else []):
                if message.error() is None:
                    visible = time.time() * 1000
                    try:  # the floor copies undecodable inputs too: not a sample
                        message_id = orjson.loads(message.value())["message_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    self.seen.setdefault(message_id, visible)
                    self.produced.setdefault(message_id, float(message.timestamp()[1]))
        self.consumer.close()


def start_floor(bootstrap: str, prefix: str, output: str) -> subprocess.Popen[bytes]:
    """The txn_floor peer, once it holds its partitions."""
    create_missing(bootstrap, [output], PARTITIONS)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.peers.txn_floor", "--bootstrap", bootstrap,
         "--prefix", prefix, "--group", f"{prefix}.floor", "--output", output],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline()  # READY, or nothing if it died
    if line.strip() != b"READY":
        process.kill()
        raise SystemExit(f"txn_floor did not start (exit {process.wait()})")
    return process


def latency_run(bootstrap: str, rate: float, seconds: float, seed: int,
                bsuid_share: float = BSUID_SHARE, extra: dict[str, str] | None = None,
                contender: str = "gate", warmup: float = WARMUP_SECONDS) -> dict[str, float]:
    """Send -> visible latency at a steady offered rate, of the gate (or of the txn_floor peer,
    the exactly-once loop with no processing). The first `warmup` seconds of records are sent
    and decided like the rest but not sampled: a new worker's first transactions wait on the
    broker (warm_up_max_ms says how long), and the figure of record is the steady state."""
    prefix = f"bench.lat.{uuid.uuid4().hex[:8]}"
    create_missing(bootstrap, [f"{prefix}.{f}" for f in FIELDS], PARTITIONS,
                   compacted=[f"{prefix}.templates"])
    workload = Workload(seed + 1, bsuid_share=bsuid_share)
    now = time.time()
    catalog = [(f"{prefix}.{r.topic}", r.key, r.value) for r in workload.catalog(now)]
    produce(bootstrap, catalog)
    if contender == "floor":
        outputs = [f"{prefix}.floor.out"]
        processes = [start_floor(bootstrap, prefix, outputs[0])]
        gate = None
    else:
        gates, outputs = start_gate(bootstrap, prefix, "gate", extra=extra)
        gate = gates[0]
        processes = [gate.process]
    watcher = Visibility(bootstrap, outputs[:2])
    watcher.start()
    phases: dict[str, float] = {}
    try:
        count = max(1, int(rate * (warmup + seconds)))
        records = [(f"{prefix}.{r.topic}", r.key, r.value)
                   for r in workload.events(count, time.time())]
        log(f"  latency ({contender}): {count:,} records at {rate:,.0f}/s, the first "
            f"{warmup:.0f} s not sampled")
        # The worker's batch phases from the end of the warm-up on (its own histogram).
        at_warm = PhaseTotals(gate.base_url) if gate is not None else None
        timer = threading.Timer(warmup, at_warm.read) if at_warm is not None else None
        if timer is not None:
            timer.start()
        sent = produce(bootstrap, records, rate=rate)
        expected = sum(1 for topic, _, _ in records if topic.endswith(".outbound"))
        if contender == "gate":
            wait_committed(bootstrap, outputs, expected, processes, 600)
        if timer is not None and at_warm is not None and gate is not None:
            timer.join()
            phases = at_warm.means_since(gate.base_url)
        deadline = time.monotonic() + 60
        while sum(1 for m in sent if m in watcher.seen) < len(sent):
            if time.monotonic() > deadline:
                raise SystemExit(f"latency: {len(watcher.seen)} of {len(sent)} decisions "
                                 "seen by the read_committed reader after 60 s")
            time.sleep(0.1)  # poll interval of a measured wait with a deadline
    finally:
        watcher.done.set()
        watcher.join(10)
        if gate is not None:
            harness.stop_worker(gate)
        else:
            for process in processes:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        drop_topics(bootstrap, prefix)
    if not sent:
        raise SystemExit("no latency samples")
    first = min(sent.values())
    steady_from = first + warmup * 1000
    latencies = sorted(watcher.seen[m] - at for m, at in sent.items() if at >= steady_from)
    warm = [watcher.seen[m] - at for m, at in sent.items() if at < steady_from]
    if not latencies:
        raise SystemExit("no latency samples after the warm-up")

    def pct(p: float) -> float:
        return float(round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1))

    return {"offered_rate": round(rate), "samples": len(latencies), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": round(latencies[-1], 1),
            "warm_up_seconds": warmup, "warm_up_max_ms": round(max(warm, default=0.0), 1),
            **phases}


class PhaseTotals:
    """A worker's outbound_gate_batch_phase_seconds (sum, count) per phase, read once; then the
    mean of each phase over the batches committed since (in ms, keys `<phase>_ms`)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.totals: dict[str, tuple[float, float]] | None = None

    def read(self) -> None:
        self.totals = self.scrape(self.base_url)

    @staticmethod
    def scrape(base_url: str) -> dict[str, tuple[float, float]]:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
            text = response.read().decode("utf-8")
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "outbound_gate_batch_phase_seconds":
                continue
            for sample in family.samples:
                phase = sample.labels.get("phase", "")
                if sample.name.endswith("_sum"):
                    sums[phase] = sample.value
                elif sample.name.endswith("_count"):
                    counts[phase] = sample.value
        return {phase: (sums.get(phase, 0.0), counts.get(phase, 0.0)) for phase in PHASES}

    def means_since(self, base_url: str) -> dict[str, float]:
        if self.totals is None:  # the first read failed: no figures rather than wrong ones
            return {}
        now = self.scrape(base_url)
        batches = now["process"][1] - self.totals["process"][1]
        if batches <= 0:
            return {}
        means = {f"{phase}_ms": round(1000 * (now[phase][0] - self.totals[phase][0]) / batches, 2)
                 for phase in PHASES}
        return {**means, "batches": batches}


def batch_shape(base_url: str) -> dict[str, float]:
    """How a worker's route loop cut its work, from its /metrics: transactions committed, input
    records per batch and partition, records re-keyed, and the seconds of each batch phase in
    all. Two trees whose CPU differs show here whether they did the same batches."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return shape_of(response.read().decode("utf-8"))


def shape_of(text: str) -> dict[str, float]:
    """batch_shape() of a /metrics text."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "outbound_gate_transactions_total" \
                    and sample.labels.get("outcome") == "committed":
                values["transactions"] = sample.value
            elif sample.name == "outbound_gate_repartitioned_records_total":
                values["rekeyed"] = sample.value
            elif sample.name == "outbound_gate_batch_records_sum":
                values["records"] = sample.value
            elif sample.name == "outbound_gate_batch_records_count":
                values["task_batches"] = sample.value
            elif sample.name == "outbound_gate_batch_phase_seconds_sum":
                values[f"{sample.labels['phase']}_s"] = sample.value
    if values.get("task_batches"):
        values["records_per_task_batch"] = values.pop("records") / values["task_batches"]
    return values


def limits_policy(limit: int) -> PolicySet:
    """The packaged policy with every tenant's messaging limit pinned."""
    version = f"{load_policy().version}-bench-limits"
    return policy_with(parameters__messaging_limit=limit, version=version)


def limits_env(limit: int) -> dict[str, str]:
    """A policy file with every tenant's messaging limit pinned, for a worker."""
    path = Path(tempfile.mkdtemp(prefix="bench-policy-")) / "policy.json"
    path.write_text(json.dumps(dict(limits_policy(limit).document)))
    return {"OUTBOUND_GATE_POLICY_FILE": str(path)}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) // 1024 for line in
                  Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mb": memory,
            "python": platform.python_version(), "kernel": platform.release()}


def paired(a: list[int], b: list[int]) -> dict[str, float]:
    """The ratios of A's i-th run to B's i-th run (side by side in the same round of the
    mirrored order, so the machine's drift over the run divides out): their median and
    geometric mean, and how many of the pairs A won."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"median": round(statistics.median(ratios), 3),
            "geometric_mean": round(statistics.geometric_mean(ratios), 3),
            "a_faster": sum(ratio > 1 for ratio in ratios), "pairs": len(ratios)}


def ab_rounds(args: argparse.Namespace, bootstrap: str, prefix: str, outbound: int,
              events: int, timeout: float, workload: dict[str, Any]) -> None:
    """This tree's gate (A) and other checkouts' (B, C, ...) on the same data, in mirrored
    rounds (A B C C B A): machines are shared and noisy, so only the ratio of figures taken
    side by side means anything. Several trees at once bisect a change in one run."""
    trees = {"A": str(harness.REPO),
             **{chr(ord("B") + index): str(Path(tree).resolve())
                for index, tree in enumerate(args.ab)}}
    sides = list(trees)
    order = [side for _ in range(args.pairs) for side in (*sides, *reversed(sides))]
    runs: dict[str, list[int]] = {side: [] for side in sides}
    per_cpu: dict[str, list[int]] = {side: [] for side in sides}
    for index, side in enumerate(order):
        extra = {"PYTHONPATH": trees[side]} if side != "A" else None
        gates, outputs = start_gate(bootstrap, prefix, f"ab-{side.lower()}{index}", extra=extra)
        cpu_before = sum(cpu_seconds(gate.process.pid) for gate in gates)
        before = [thread_cpu(gate.process.pid) for gate in gates]
        try:
            span = wait_committed(bootstrap, outputs, outbound,
                                  [gate.process for gate in gates], timeout)
            cpu = sum(cpu_seconds(gate.process.pid) for gate in gates) - cpu_before
            threads: dict[str, float] = {}
            for gate, earlier in zip(gates, before, strict=True):
                for kind, seconds in thread_cpu(gate.process.pid).items():
                    threads[kind] = threads.get(kind, 0.0) + seconds - earlier.get(kind, 0.0)
            shape = batch_shape(gates[0].base_url)
        finally:
            for gate in gates:
                harness.stop_worker(gate)
        runs[side].append(round(events / span))
        # Per CPU second as well: less moved by whatever else the shared machine runs.
        per_cpu[side].append(round(events / max(cpu, 1e-3)))
        log(f"  {side} ({trees[side]}): {runs[side][-1]:,} events/s, "
            f"{per_cpu[side][-1]:,} events/CPU-s; CPU s by thread: "
            + ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in sorted(threads.items()))
            + "; " + ", ".join(f"{name} {value:,.1f}" for name, value in shape.items()))
    median = {side: statistics.median(values) for side, values in runs.items()}
    median_cpu = {side: statistics.median(values) for side, values in per_cpu.items()}
    summary: dict[str, Any] = {"events": events, "partitions": PARTITIONS, "workload": workload}
    for side in sides:
        summary[side.lower()] = {"tree": trees[side], "events_per_s": runs[side],
                                 "events_per_cpu_second": per_cpu[side]}
    for side in sides[1:]:
        summary[f"ratio_a_to_{side.lower()}"] = round(median["A"] / median[side], 3)
        summary[f"cpu_ratio_a_to_{side.lower()}"] = round(median_cpu["A"] / median_cpu[side], 3)
        summary[f"paired_a_to_{side.lower()}"] = paired(runs["A"], runs[side])
        summary[f"paired_cpu_a_to_{side.lower()}"] = paired(per_cpu["A"], per_cpu[side])
    summary["machine"] = machine()
    summary["command"] = " ".join(["python -m tests.benchmarks.throughput", *sys.argv[1:]])
    out = args.output or RESULTS / "ab.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    drop_topics(bootstrap, prefix)
    for side in sides[1:]:
        print(f"A {runs['A']} {side} {runs[side]} events/s; median A/{side} "
              f"{summary[f'ratio_a_to_{side.lower()}']}; per CPU second A {per_cpu['A']} "
              f"{side} {per_cpu[side]}, median A/{side} "
              f"{summary[f'cpu_ratio_a_to_{side.lower()}']}  ({trees[side]})")
        pairs, pairs_cpu = (summary[f"paired_a_to_{side.lower()}"],
                            summary[f"paired_cpu_a_to_{side.lower()}"])
        print(f"  run by run, A/{side}: median {pairs['median']}, geometric mean "
              f"{pairs['geometric_mean']}, A faster in {pairs['a_faster']} of {pairs['pairs']}; "
              f"per CPU second: median {pairs_cpu['median']}, geometric mean "
              f"{pairs_cpu['geometric_mean']}, A faster in {pairs_cpu['a_faster']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events: a smoke run")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bsuid-share", type=float, default=BSUID_SHARE,
                        help="share of the messages addressed to BSUIDs (0.10); 0 is the "
                             "phone-only workload: no BSUID, no linking")
    parser.add_argument("--number-changes", type=float, default=NUMBER_CHANGES,
                        help="share of the state events of users with a number that are "
                             "number changes (0.05); 0 for a tree older than the gate's "
                             "user_changed_number handling, so that --ab compares equal work")
    parser.add_argument("--output", type=Path,
                        help="where to write the results (default: results/latest.json, "
                             "results/quick.json with --quick)")
    parser.add_argument("--messaging-limit", type=int, default=10_000,
                        help="the limit pinned for every tenant in the gate_limits run")
    parser.add_argument("--only", nargs="*",
                        choices=["ceiling", "gate", "gate_at_least_once", "gate_2_workers",
                                 "gate_limits", "faust_plain", "quix"])
    parser.add_argument("--latency-only", type=float, metavar="RATE",
                        help="no throughput runs: latency at RATE (say, half the gate's "
                             "measured maximum) and at 1,000/s, the floor once and the gate "
                             "with and without messaging limits in ABBA order (gate, limits, "
                             "limits, gate), --pairs times; writes results/latency-abba.json")
    parser.add_argument("--pairs", type=int, default=1,
                        help="ABBA rounds with --latency-only or --ab")
    parser.add_argument("--ab", metavar="TREE", nargs="+",
                        help="A/B: the gate of this tree against the gate of other checkouts "
                             "(their workers run with PYTHONPATH=TREE), mirrored rounds "
                             "(A B B A, or A B C C B A with two trees) on the same preloaded "
                             "data; throughput only")
    args = parser.parse_args()
    if args.latency_only:
        latency_abba(args)
        return
    events = 5_000 if args.quick else args.events
    latency_seconds = 3.0 if args.quick else args.latency_seconds
    warmup = 1.0 if args.quick else WARMUP_SECONDS
    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    prefix = f"bench.{uuid.uuid4().hex[:8]}"
    create_missing(bootstrap, [f"{prefix}.{f}" for f in FIELDS], PARTITIONS,
                   compacted=[f"{prefix}.templates"])
    log(f"preloading {events:,} events into {prefix}.* ({PARTITIONS} partitions)")
    workload = Workload(args.seed, bsuid_share=args.bsuid_share,
                        number_changes=args.number_changes)
    now = time.time()
    catalog = [(f"{prefix}.{r.topic}", r.key, r.value) for r in workload.catalog(now)]
    generated = list(workload.events(events, now))
    records = [(f"{prefix}.{r.topic}", r.key, r.value) for r in generated]
    produce(bootstrap, catalog + records)
    workload_mix = {"bsuid_share": args.bsuid_share, "number_changes": args.number_changes,
                    **identity_mix(generated)}
    log(f"  workload: {workload_mix}")
    outbound = sum(1 for topic, _, _ in records if topic.endswith(".outbound"))
    timeout = 120 + events / 200  # generous: at least 200 records/s
    results: dict[str, Any] = {}
    default = ["ceiling", "gate", "gate_limits", "gate_at_least_once", "faust_plain", "quix"]
    limits = limits_env(args.messaging_limit)
    if args.ab:
        ab_rounds(args, bootstrap, prefix, outbound, events, timeout, workload_mix)
        return
    for name in args.only or (default if args.quick else [*default, "gate_2_workers"]):
        log(f"  {name}")
        if name.startswith("gate"):
            # Each gate run has its own consumer group and output topics (tag = name).
            gates, outputs = start_gate(
                bootstrap, prefix, name.replace("_", "-"),
                workers=2 if name == "gate_2_workers" else 1,
                extra={"OUTBOUND_GATE_PROCESSING_GUARANTEE": "at_least_once"}
                if name == "gate_at_least_once" else limits if name == "gate_limits" else None)
            cpu_before = sum(cpu_seconds(gate.process.pid) for gate in gates)
            try:
                span = wait_committed(bootstrap, outputs, outbound,
                                      [gate.process for gate in gates], timeout)
                rss = max(peak_rss_mb(gate.process.pid) for gate in gates)
                cpu = sum(cpu_seconds(gate.process.pid) for gate in gates) - cpu_before
            finally:
                for gate in gates:
                    harness.stop_worker(gate)
            # Events per second of the workers' CPU (every thread: Python's and librdkafka's):
            # what one core carries, whatever else shares the machine.
            results[name] = {"events_per_s": round(events / span), "seconds": round(span, 2),
                             "peak_rss_mb": round(rss),
                             "events_per_cpu_second": round(events / max(cpu, 1e-3))}
        else:
            expected = len(catalog) + len(records) if name == "ceiling" else outbound
            span = run_peer(name, bootstrap, prefix, expected, timeout)
            results[name] = {"events_per_s": round(events / span), "seconds": round(span, 2)}
        log(f"    {results[name]['events_per_s']:,} events/s")
    summary: dict[str, Any] = {"events": events, "partitions": PARTITIONS,
                               "workload": workload_mix,
                               "contenders": results, "machine": machine(),
                               "command": " ".join(["python -m tests.benchmarks.throughput",
                                                    *sys.argv[1:]])}
    if "gate" in results:
        gate_eps = results["gate"]["events_per_s"]
        summary["ratios"] = {f"gate/{name}": round(gate_eps / r["events_per_s"], 2)
                             for name, r in results.items() if name != "gate"}
        half, low = gate_eps / 2, min(1000.0, gate_eps / 2)

        def latency(rate: float, **how: Any) -> dict[str, float]:
            return latency_run(bootstrap, rate, latency_seconds, args.seed, args.bsuid_share,
                               warmup=warmup, **how)

        summary["latency"] = latency(half)
        # The rate a help desk's agents make: latency when the gate is far from saturated.
        summary["latency_at_1000"] = latency(low)
        # The same rates through the exactly-once loop with no processing: the floor.
        summary["latency_floor"] = latency(half, contender="floor")
        summary["latency_floor_at_1000"] = latency(low, contender="floor")
        summary["gate_peak_rss_mb"] = results["gate"]["peak_rss_mb"]
        if "gate_limits" in results:  # the same offered rate, messaging limits on
            summary["latency_limits"] = latency(half, extra=limits)
            summary["latency_limits_at_1000"] = latency(low, extra=limits)
            summary["messaging_limit"] = args.messaging_limit
    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    drop_topics(bootstrap, prefix)
    print(f"{'contender':<14}{'events/s':>12}{'seconds':>10}{'per CPU-s':>11}")
    for name, result in results.items():
        per_cpu = result.get("events_per_cpu_second")
        print(f"{name:<14}{result['events_per_s']:>12,}{result['seconds']:>10}"
              f"{f'{per_cpu:,}' if per_cpu else '':>11}")
    for ratio, value in summary.get("ratios", {}).items():
        print(f"{ratio:<22}{value:>6}")
    if "gate_peak_rss_mb" in summary:
        print(f"gate peak RSS {summary['gate_peak_rss_mb']} MB")
    for field, what in (("latency", "gate"), ("latency_at_1000", "gate"),
                        ("latency_limits", "with messaging limits"),
                        ("latency_limits_at_1000", "with messaging limits"),
                        ("latency_floor", "floor (no processing)"),
                        ("latency_floor_at_1000", "floor (no processing)")):
        if field in summary:
            print(latency_line(summary[field], what))
    print(f"written to {out}")


def latency_line(result: dict[str, float], what: str) -> str:
    line = (f"latency at {result['offered_rate']:,}/s {what}: p50 {result['p50_ms']} ms, p99 "
            f"{result['p99_ms']} ms, max {result['max_ms']} ms (warm-up max "
            f"{result['warm_up_max_ms']} ms)")
    if "process_ms" in result:
        line += (f"; a batch ({result['batches']:,.0f} after the warm-up), mean ms: " +
                 ", ".join(f"{phase} {result[f'{phase}_ms']}" for phase in PHASES))
    return line


def latency_abba(args: argparse.Namespace) -> None:
    """Latency of the gate with and without messaging limits, side by side: ABBA rounds at
    each rate, so that drift of a shared machine falls on both alike."""
    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    limits = limits_env(args.messaging_limit)
    summary: dict[str, Any] = {"machine": machine(), "messaging_limit": args.messaging_limit,
                               "warm_up_seconds": WARMUP_SECONDS,
                               "command": " ".join(["python -m tests.benchmarks.throughput",
                                                    *sys.argv[1:]])}
    for rate in (args.latency_only, min(1000.0, args.latency_only)):
        runs: dict[str, list[dict[str, float]]] = {"floor": [], "gate": [], "gate_limits": []}
        runs["floor"].append(latency_run(bootstrap, rate, args.latency_seconds, args.seed,
                                         args.bsuid_share, contender="floor"))
        log(latency_line(runs["floor"][-1], "floor"))
        for _ in range(args.pairs):
            for name in ("gate", "gate_limits", "gate_limits", "gate"):
                runs[name].append(latency_run(
                    bootstrap, rate, args.latency_seconds, args.seed, args.bsuid_share,
                    limits if name == "gate_limits" else None))
                log(latency_line(runs[name][-1], name))
        means = {name: {field: round(sum(r[field] for r in rs) / len(rs), 1)
                        for field in ("p50_ms", "p99_ms")} for name, rs in runs.items()}
        change = {field: round(means["gate_limits"][field] / means["gate"][field] - 1, 3)
                  for field in ("p50_ms", "p99_ms")}
        summary[f"at_{round(rate)}"] = {"runs": runs, "means": means, "limits_change": change}
        print(f"at {rate:,.0f}/s: floor p50/p99 {means['floor']['p50_ms']}/"
              f"{means['floor']['p99_ms']} ms; gate {means['gate']['p50_ms']}/"
              f"{means['gate']['p99_ms']} ms; with limits {means['gate_limits']['p50_ms']}/"
              f"{means['gate_limits']['p99_ms']} ms (p99 {change['p99_ms']:+.1%})")
    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / "latency-abba.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
