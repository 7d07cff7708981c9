"""`make chaos`: decisions through worker crashes, restarts and broker restarts, then an audit.

    .venv/bin/python -m tests.benchmarks.chaos [--events 200000] [--short]

1. Fresh topics; the template catalog, then the state events of a seeded processors.tools.loadgen
   workload (statuses, inbound messages, preferences; some name a user's BSUID alone, some
   link the user's number and BSUID), applied by the gate before any message: the run waits
   until the route group has committed every state record and every record the linking put on
   the repartition topic (wait_state_applied). About 10% of the messages go to BSUIDs.
2. Two gate workers (one consumer group). The outbound messages of the workload (1% malformed)
   stream in at --rate while, at random moments (seeded): a worker is SIGKILLed and started
   again (--kills times), a worker is stopped with SIGTERM and started again, the broker is
   restarted with SIGTERM (staying down --broker-down seconds) and with SIGKILL. With --scale
   instead: two more workers join (4 in all), w0 is SIGKILLed and restarted, then one of the
   new workers leaves with SIGTERM and the other is SIGKILLed for good.
3. Audit with a read_committed consumer of the accepted, rejected and dead-letter topics:
   lost = inputs with no output, duplicated = inputs with more than one, wrong = outputs that
   differ from the offline check (processors.tools.offline) over the same records in the same order.
   Both sides use the packaged policy with PAIR_RATE_LIMITED in monitor mode: that rule alone
   depends on when a message is decided (the wall clock live, created_at offline); see
   tests/benchmarks/policies.py.
   Prints one JSON line (with events_per_s: the outbound records over the time from the first
   one sent to the last output written, faults included) and exits 1 unless lost, duplicated
   and wrong are all 0.

Broker restarts need the local broker (deploy/local/kafka.sh); with KAFKA_BOOTSTRAP_SERVERS set
to another cluster they are skipped and the summary says so.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from kafka import KafkaProducer

from processors.core.policy import load_policy
from processors.runtime.topics import create_missing
from processors.settings import TOPIC_ENV, Settings, Topics
from processors.tools.loadgen import Workload, identity_mix
from processors.tools.offline import OfflineCheck
from tests.benchmarks.policies import write_timing_free_policy
from tests.benchmarks.state_footprint import rss_mb
from tests.e2e import conftest as harness

REPO = Path(__file__).resolve().parents[2]
KAFKA = REPO / "deploy/local/kafka.sh"
PARTITIONS = 4


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Sent:
    """Every input record that must get exactly one output, and what the offline check says."""

    by_message_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_position: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)


def expected_outcome(result: dict[str, Any]) -> dict[str, Any]:
    if result["decision"] == "dead_letter":
        return {"decision": "dead_letter", "reason": result["reason"]}
    return {"decision": result["decision"], "error_code": result["error_code"]}


class Cluster:
    """The workers and the broker, and the chaos done to them."""

    def __init__(self, bootstrap: str, run_id: str, tmp: Path, local_broker: bool,
                 policy: Path) -> None:
        self.bootstrap = bootstrap
        self.run_id = run_id
        self.tmp = tmp
        self.local_broker = local_broker
        self.env = {"OUTBOUND_GATE_PARTITIONS": str(PARTITIONS),
                    "OUTBOUND_GATE_LOG_LEVEL": "info",
                    # The policy the offline check uses too: PAIR_RATE_LIMITED in monitor mode,
                    # since its outcome depends on the moment of decision (wall clock live,
                    # created_at offline), not on what the records say.
                    "OUTBOUND_GATE_POLICY_FILE": str(policy)}
        self.workers: dict[str, harness.Gate] = {}
        self.peak_rss: dict[str, float] = {}
        self.down_rss: list[float] = []
        self.actions: list[str] = []
        self.most = 0  # workers running at once, at most

    def start(self, name: str) -> None:
        gate = harness.start_worker(self.bootstrap, self.tmp, self.run_id, self.env,
                                    wait=False, name=name)
        self.workers[name] = gate
        harness.wait_ready(gate, timeout=180)
        self.most = max(self.most, len(self.running()))

    def kill_left(self) -> None:
        """At exit, whatever ended the run: no worker outlives it (an orphaned worker of a
        crashed run kept using a core of the machine and disturbed every measurement after)."""
        for gate in self.workers.values():
            if gate.process.poll() is None:
                gate.process.kill()

    def kill(self, name: str) -> None:
        self.workers[name].process.kill()
        self.workers[name].process.wait(timeout=30)
        self.actions.append(f"SIGKILL {name}")

    def stop(self, name: str) -> None:
        code = harness.stop_worker(self.workers[name])
        self.actions.append(f"SIGTERM {name} (exit {code})")

    def broker(self, how: str, down_seconds: float) -> None:
        command = "down" if how == "SIGTERM" else "kill"
        subprocess.run([str(KAFKA), command], check=True, capture_output=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable})
        deadline = time.monotonic() + down_seconds
        while time.monotonic() < deadline:  # the outage itself: measure the workers meanwhile
            self.down_rss.append(max(rss_mb(g.process.pid) for g in self.workers.values()
                                     if g.process.poll() is None))
            time.sleep(0.5)  # sampling interval of a measured outage, not a synchronisation
        subprocess.run([str(KAFKA), "up"], check=True, capture_output=True, timeout=600,
                       env={**os.environ, "PYTHON": sys.executable})
        self.actions.append(f"broker {how}, down {down_seconds:.0f}s")

    def running(self) -> list[str]:
        return [name for name, gate in self.workers.items() if gate.process.poll() is None]

    def sample(self) -> None:
        for name, gate in self.workers.items():
            if gate.process.poll() is None:
                self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss_mb(gate.process.pid))

    def problems(self) -> list[str]:
        found = []
        for name, gate in self.workers.items():
            text = gate.log()
            if "Traceback" in text:
                # The exception's line, so a failed CI run says what crashed without its files.
                tail = text[text.index("Traceback"):].splitlines()
                end = next((i for i, line in enumerate(tail[1:], 1)
                            if line and not line.startswith(" ")), len(tail) - 1)
                where = [line.strip() for line in tail[:end] if line.strip().startswith("File")]
                found.append(f"{name}: a traceback in {gate.log_path}: "
                             f"{(where or [''])[-1]} -> {tail[end][:300]}")
        return found


Records = list[tuple[str, bytes | None, bytes | None]]


def produce_state(producer: KafkaProducer, topics: Topics, workload: Workload, events: int,
                  now: float) -> tuple[Records, Records, dict[str, int]]:
    """Split the workload: state events (sent now) and outbound records (streamed later); and
    its identity mix."""
    state: Records = []
    outbound: Records = []
    generated = list(workload.events(events, now))
    for record in generated:
        topic = getattr(topics, record.topic)
        (outbound if record.topic == "outbound" else state).append((topic, record.key,
                                                                     record.value))
    for topic, key, value in state:
        producer.send(topic, key=key, value=value)
    producer.flush()
    return state, outbound, identity_mix(generated)


def stream(producer: KafkaProducer, records: list[tuple[str, bytes, bytes]], rate: float,
           positions: dict[int, tuple[int, int]], done: threading.Event) -> None:
    """Send at `rate` records/s; remember where each landed (the audit needs the offsets)."""
    started = time.monotonic()
    futures = []
    for index, (topic, key, value) in enumerate(records):
        due = started + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing of the offered rate
        futures.append((index, producer.send(topic, key=key, value=value)))
    producer.flush()
    for index, future in futures:
        metadata = future.get(timeout=300)
        positions[index] = (metadata.partition, metadata.offset)
    done.set()


def read_outputs(bootstrap: str, topics: Topics, expected: int, timeout: float,
                 quiet_seconds: float) -> tuple[list[tuple[str, dict[str, Any]]], float]:
    """All committed outputs, once `expected` have arrived and nothing more came for a while,
    and the newest output's timestamp (seconds).

    Each pass reads everything from the start with a fresh consumer (a consumer created just
    after a broker restart was seen to stay silent); passes repeat until the count is reached.
    """
    deadline = time.monotonic() + timeout
    while True:
        outputs, last = read_pass(bootstrap, topics, quiet_seconds)
        log(f"audit: {len(outputs):,} / {expected:,} outputs")
        if len(outputs) >= expected or time.monotonic() > deadline:
            return outputs, last


def read_pass(bootstrap: str, topics: Topics, quiet_seconds: float
              ) -> tuple[list[tuple[str, dict[str, Any]]], float]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    names = [topics.accepted, topics.rejected, topics.dlq]
    # Explicit start offsets: no committed-offset lookup in the group (that lookup failing with
    # NOT_COORDINATOR just after a broker restart left a consumer silent).
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in names
                     for p in range(PARTITIONS)])
    outputs: list[tuple[str, dict[str, Any]]] = []
    errors: Counter[str] = Counter()
    last_new = time.monotonic()
    newest = 0  # ms: the create time the worker's producer gave the output
    try:
        while time.monotonic() - last_new < quiet_seconds:
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                if message.error():
                    errors[str(message.error())] += 1
                    continue
                last_new = time.monotonic()
                newest = max(newest, message.timestamp()[1])
                outputs.append((message.topic(), orjson.loads(message.value() or b"null")))
    finally:
        consumer.close()
    if errors:
        log(f"audit consumer errors: {dict(errors)}")
    return outputs, newest / 1000.0


def audit(sent: Sent, outputs: list[tuple[str, dict[str, Any]]], topics: Topics
          ) -> dict[str, Any]:
    seen: Counter[Any] = Counter()
    wrong = extra = 0
    samples: list[dict[str, Any]] = []
    for topic, record in outputs:
        if topic == topics.dlq:
            key: Any = (record["topic"], record["partition"], record["offset"])
            expected = sent.by_position.get(key)
            got = {"decision": "dead_letter", "reason": record["reason"]}
        else:
            key = record["message_id"]
            expected = sent.by_message_id.get(key)
            got = {"decision": "accepted" if topic == topics.accepted else "rejected",
                   "error_code": record.get("error_code")}
        if expected is None:
            extra += 1
            continue
        seen[key] += 1
        if seen[key] == 1 and got != expected:
            wrong += 1
            if len(samples) < 10:
                samples.append({"input": str(key), "expected": expected, "got": got,
                                "record": {k: record.get(k) for k in
                                           ("enrichment", "violations", "decided_at")}})
    inputs = [*sent.by_message_id, *sent.by_position]
    return {"inputs": len(inputs), "outputs": len(outputs),
            "lost": sum(1 for key in inputs if not seen[key]),
            "duplicated": sum(1 for key in inputs if seen[key] > 1),
            "wrong": wrong, "unexpected_outputs": extra, "wrong_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1500.0, help="outbound records/s offered")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--broker-down", type=float, default=60.0,
                        help="seconds the broker stays down after its SIGTERM")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--short", action="store_true",
                        help="20,000 events, 2 kills, a stop/start, the broker SIGKILLed once")
    parser.add_argument("--scale", action="store_true",
                        help="the group grows from 2 workers to 4 and shrinks back to 2 (one "
                        "leaves with SIGTERM, one is SIGKILLed for good), with a kill and "
                        "restart of a first worker in between; no broker faults")
    args = parser.parse_args()
    if args.short:
        args.events, args.kills, args.broker_down = 20_000, 2, 0.0
    rng = random.Random(args.seed)
    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    local_broker = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    run_id = uuid.uuid4().hex[:8]
    topics = Topics(**{name: f"{getattr(Topics(), name)}.{run_id}" for name in TOPIC_ENV})
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    create_missing(bootstrap, topics.all(), PARTITIONS,
                   compacted=[topics.templates, topics.policy], single_partition=[topics.policy])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             enable_idempotence=True, retries=2**31 - 1,
                             delivery_timeout_ms=600_000, request_timeout_ms=30_000)
    workload = Workload(args.seed)
    now = time.time()
    catalog = list(workload.catalog(now))
    for record in catalog:
        producer.send(topics.templates, key=record.key, value=record.value)
    state, outbound, mix = produce_state(producer, topics, workload, args.events, now)
    log(f"run {run_id}: {len(catalog)} catalog entries, {len(state):,} state events sent; "
        f"{len(outbound):,} outbound records to stream at {args.rate:,.0f}/s; data in {tmp}")
    log(f"identities: {mix['outbound_to_bsuid']:,} outbound records to BSUIDs, "
        f"{mix['state_linking']:,} state events linking a number and a BSUID, "
        f"{mix['state_bsuid_only']:,} naming a BSUID alone")

    # The offline check over the same records in the same order says what each must become,
    # with the workers' policy: the packaged one with PAIR_RATE_LIMITED in monitor mode (the
    # live worker decides at the wall clock, the offline check at each message's created_at,
    # so the pair budget of a busy user runs out at different messages on the two sides).
    policy = write_timing_free_policy(tmp)
    check = OfflineCheck(load_policy(policy), topics)
    line = 0
    sent = Sent()
    for record in catalog:
        line += 1
        check.line(line, orjson.dumps({"topic": topics.templates,
                                       "value": orjson.loads(record.value or b"null")}))
    state_dead: list[tuple[int, dict[str, Any]]] = []
    for index, (topic, _, value) in enumerate(state):
        line += 1
        envelope = orjson.dumps({"topic": topic, "value": orjson.loads(value or b"null")})
        result = check.line(line, envelope)
        if result is not None:
            state_dead.append((index, result))
    if state_dead:
        raise SystemExit(f"{len(state_dead)} state events would be dead letters: the workload "
                         "sends only valid state events, so the audit cannot place them")
    # A null value is what the live gate gets as an empty record: b"" reads the same offline.
    expected_outbound = [check.line(line + i + 1, value or b"") for i, (_, _, value) in
                         enumerate(outbound)]

    cluster = Cluster(bootstrap, run_id, tmp, local_broker, policy)
    atexit.register(cluster.kill_left)
    for name in ("w0", "w1"):
        cluster.start(name)
    log("workers ready; waiting for the catalog and the state events to be applied")
    harness.poll(lambda: all(harness.http_json(f"{g.base_url}/readyz")[1]["catalog_entries"]
                             >= len(catalog) for g in cluster.workers.values()),
                 120, "both workers to hold the whole catalog")
    wait_state_applied(bootstrap, run_id, topics, len(state))

    positions: dict[int, tuple[int, int]] = {}
    done = threading.Event()
    sender = threading.Thread(target=stream, args=(producer, outbound, args.rate, positions,
                                                   done), daemon=True)
    started = time.monotonic()
    started_at = time.time()  # the outputs' timestamps are on the wall clock
    sender.start()
    window = len(outbound) / args.rate
    if args.scale:  # in this order: two join, a first worker dies and returns, two leave
        plan = [("join", "w2"), ("join", "w3"), ("kill", "w0"), ("leave", "w3"),
                ("vanish", "w2")]
    else:
        plan = [("kill", rng.choice(["w0", "w1"])) for _ in range(args.kills)]
        plan.append(("restart", "w1"))
        if local_broker:
            plan.append(("broker", "SIGKILL"))
            if not args.short:
                plan.append(("broker", "SIGTERM"))
        rng.shuffle(plan)
    moments = sorted(rng.uniform(0.05, 0.9) * window for _ in plan)
    for (action, target), moment in zip(plan, moments, strict=True):
        while time.monotonic() - started < moment:
            cluster.sample()
            time.sleep(0.2)  # waiting for the planned moment of the next fault
        log(f"t={time.monotonic() - started:.0f}s: {action} {target}")
        if action == "kill":
            cluster.kill(target)
            cluster.start(target)
        elif action == "join":
            cluster.start(target)
            cluster.actions.append(f"{target} joined ({len(cluster.running())} workers)")
        elif action == "leave":
            cluster.stop(target)
        elif action == "vanish":
            cluster.kill(target)
        elif action == "restart":
            cluster.stop(target)
            cluster.start(target)
        else:
            cluster.broker(target, args.broker_down if target == "SIGTERM" else 3.0)
            for gate in cluster.workers.values():  # the workers ride it out, or crashed
                if gate.process.poll() is not None:
                    raise SystemExit(f"a worker exited during the broker restart: "
                                     f"{gate.log_path}")
    harness.poll(done.is_set, 900, "the producer to send every outbound record")
    cluster.sample()
    for index, result in enumerate(expected_outbound):
        assert result is not None
        if result["decision"] == "dead_letter":
            partition, offset = positions[index]
            sent.by_position[(topics.outbound, partition, offset)] = expected_outcome(result)
        else:
            sent.by_message_id[result["message_id"]] = expected_outcome(result)
    log(f"all sent after {time.monotonic() - started:.0f}s; auditing")
    outputs, last_output = read_outputs(bootstrap, topics, len(outbound), timeout=900,
                                        quiet_seconds=15)
    # Through the faults: from the first outbound record sent to the last output written.
    decided_in = max(last_output - started_at, 1e-3)
    cluster.sample()
    result = audit(sent, outputs, topics)
    for gate in cluster.workers.values():
        harness.stop_worker(gate)
    summary = {
        "events": args.events, "state_events": len(state), "outbound_records": len(outbound),
        "identities": {k: v for k, v in mix.items() if k.startswith(("outbound_to", "state_"))},
        **result,
        "offered_rate": args.rate,
        # outbound records / seconds from the first one sent to the last output, faults and
        # outages included
        "events_per_s": round(len(outbound) / decided_in),
        "decided_in_seconds": round(decided_in),
        "faults": cluster.actions,
        "broker_restarts": ("none (--scale)" if args.scale else "done" if local_broker
                            else "skipped: external cluster"),
        "workers_at_most": cluster.most,
        "worker_peak_rss_mb": round(max(cluster.peak_rss.values(), default=0)),
        "worker_rss_mb_while_broker_down": round(max(cluster.down_rss, default=0)),
        "crash_traces": cluster.problems(),
        "seconds": round(time.monotonic() - started),
        "command": " ".join(["python -m tests.benchmarks.chaos", *sys.argv[1:]]),
    }
    print(json.dumps(summary))
    ok = not (result["lost"] or result["duplicated"] or result["wrong"]
              or result["unexpected_outputs"])
    sys.exit(0 if ok else 1)


def wait_state_applied(bootstrap: str, run_id: str, topics: Topics, count: int) -> None:
    """Every state record read, and every record linking put on the repartition topic, by the
    route group: polled (with a deadline) until nothing is left after the group's committed
    offsets, on the state topics and on the repartition topic.

    Linking a number and a BSUID takes hops on the repartition topic (claim, adopt, release,
    return, and state events forwarded to the number's partition), each one a record produced
    in the transaction that consumed the previous one. So once, at one moment, every record of
    these topics is consumed and its offset committed, no hop is in flight: a transaction in
    flight would have consumed a record whose offset is not committed yet. The group's
    committed offsets are read first, in one request, and the topics afterwards, so a record
    that arrives in between only makes the check fail once more.

    The state topics are written without transactions: committed must be their end. The
    repartition topic is written in transactions, by every partition's producer at once: past
    the last record the group consumed there may be several transaction markers (one per
    producer whose transaction wrote to the partition) and aborted records, which the group
    never consumes. So there, nothing must be pending (no open transaction: the last stable
    offset is the end) and a read_committed reader from the committed offset must reach the
    end without a record.
    """
    settings = Settings(app_id=f"outbound-gate-test-{run_id}")  # the harness's app id
    group = settings.route_group
    repartition = settings.repartition_topic
    names = [topics.statuses, topics.inbound, topics.preferences, repartition]
    partitions = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
    common = {"bootstrap.servers": bootstrap, "enable.auto.commit": False}
    offsets = Consumer({**common, "group.id": group})
    # Without transactions in the way: the end of the log (the high watermark).
    ends = Consumer({**common, "group.id": f"chaos-ends-{run_id}",
                     "isolation.level": "read_uncommitted"})
    # read_committed: its end is the last stable offset, and it skips markers and aborted
    # records.
    reader = Consumer({**common, "group.id": f"chaos-reader-{run_id}",
                       "isolation.level": "read_committed", "enable.partition.eof": True})

    def nothing_committed_after(starts: list[TopicPartition]) -> bool:
        """Does a read_committed reader reach every partition's end without a record?"""
        reader.assign(starts)
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        try:
            while len(at_end) < len(starts):
                if time.monotonic() > deadline:
                    return False
                message = reader.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    return False  # a record the group has not consumed yet
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(message.partition() or 0))
            return True
        finally:
            reader.unassign()

    def applied() -> bool:
        committed = offsets.committed(partitions, timeout=10)
        behind: list[TopicPartition] = []
        for tp in committed:
            low, high = ends.get_watermark_offsets(tp, timeout=10)
            start = max(tp.offset, low)
            if start >= high:
                continue
            if tp.topic != repartition:
                return False
            _, stable = reader.get_watermark_offsets(tp, timeout=10)
            if stable < high:  # a transaction is open or its markers are not all written
                return False
            behind.append(TopicPartition(tp.topic, tp.partition, start))
        return not behind or nothing_committed_after(behind)

    try:
        harness.poll(applied, 300, f"the {count:,} state events (and the repartition hops "
                     "of linking) to be applied")
        hops = sum(ends.get_watermark_offsets(TopicPartition(repartition, p), timeout=10)[1]
                   for p in range(PARTITIONS))
    finally:
        for consumer in (offsets, ends, reader):
            consumer.close()
    log(f"state applied: {count:,} state events; the repartition topic holds {hops:,} "
        "offsets (linking's records and transaction markers)")


if __name__ == "__main__":
    main()
