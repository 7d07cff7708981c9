"""`make fuzz`: hostile input through the real worker on the real broker.

    .venv/bin/python -m tests.benchmarks.hostile [--events 100000] [--seed 42]
        [--max-bytes 65536] [--good-every 4]

Starts a worker (OUTBOUND_GATE_MAX_MESSAGE_BYTES = --max-bytes) on topics of its own, produces
--events bad records made by tests.hostile (every category: wrong types, missing fields,
huge strings, deep nesting, invalid UTF-8, not JSON, empty and null values, records over the
size limit but under the broker's, numbers in odd formats, bad state events) with a good record
after every --good-every of them (and a valid state event, which has no output, after every
36), then reads the three output topics until every input has its
output, or the deadline passes. Each input must have exactly one output of the expected class
(valid state events, with large extra fields now and then, must have none):
a dead letter with the expected reason (matched by topic/partition/offset; its value_base64 must
be the input's bytes) or a decision (matched by message_id) with the expected outcome. The
worker must still be running, with no traceback in its log. About 10% of the good messages go to
business-scoped user IDs (BSUIDs), and the valid state events name BSUIDs alone or link them to
numbers. The worker runs the packaged policy with PAIR_RATE_LIMITED in monitor mode: the good
messages all go to a few users, so the pair budget (45 sends, one more every 6 s) would refuse
them at moments that depend on the run's pace, while each expectation here is the record's own
(tests/benchmarks/policies.py says more).

Prints a one-line JSON summary (also written to tests/benchmarks/results/hostile-latest.json,
or hostile-quick.json under 10,000 events) and exits 1 on any lost, extra or mismatched output.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.benchmarks.policies import write_timing_free_policy
from tests.benchmarks.throughput import peak_rss_mb
from tests.e2e import conftest as harness
from tests.hostile import WEIGHTS, Hostile, HostileInput

RESULTS = Path(__file__).resolve().parent / "results"
PARTITIONS = 4


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def digest(value: bytes | None) -> bytes | None:
    return None if value is None else hashlib.blake2b(value, digest_size=16).digest()


@dataclass
class Sent:
    """What was produced: each record's expectation and where it landed."""

    records: list[Hostile]
    digests: list[bytes | None]
    by_place: dict[tuple[str, int, int], int] = field(default_factory=dict)
    by_message_id: dict[str, int] = field(default_factory=dict)
    failed: int = 0


def produce(bootstrap: str, gate: harness.Gate, records: list[Hostile]) -> Sent:
    sent = Sent(records, [digest(r.value) for r in records])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True,
                         "message.max.bytes": 1_000_000})

    def delivered(index: int) -> Any:
        def callback(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                sent.failed += 1
                log(f"  not produced: record {index} ({records[index].category}): {error}")
                return
            place = (str(message.topic()), int(message.partition() or 0),
                     int(message.offset() or 0))
            sent.by_place[place] = index
        return callback

    for index, record in enumerate(records):
        if record.decided:
            assert record.message_id is not None
            sent.by_message_id[record.message_id] = index
        while True:
            try:
                producer.produce(getattr(gate.topics, record.topic), value=record.value,
                                 key=record.key, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(120)
    return sent


@dataclass
class Tally:
    outputs: Counter[int] = field(default_factory=Counter)  # input index -> outputs seen
    outcomes: Counter[str] = field(default_factory=Counter)
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    bad_raw: int = 0  # dead letters whose value_base64 is not the input's bytes
    wrong: set[int] = field(default_factory=set)  # inputs with an output of the wrong class

    def take(self, sent: Sent, output_topic: str, value: bytes | None, dlq: str) -> None:
        record = orjson.loads(value or b"{}")
        if output_topic == dlq:
            outcome = f"dlq:{record.get('reason')}"
            index = sent.by_place.get((record.get("topic"), record.get("partition"),
                                       record.get("offset")))
        else:
            code = record.get("error_code")
            outcome = f"rejected:{code}" if code else "accepted"
            index = sent.by_message_id.get(record.get("message_id"))
        self.outcomes[outcome] += 1
        if index is None:
            self.unmatched.append({"outcome": outcome, "record": str(record)[:300]})
            return
        self.outputs[index] += 1
        expected = sent.records[index]
        if outcome != expected.expect:
            self.wrong.add(index)
            self.mismatched.append({"category": expected.category, "expected": expected.expect,
                                    "got": outcome, "error": record.get("error"),
                                    "input": repr(expected.value[:200] if expected.value
                                                  else expected.value)})
        if output_topic == dlq:
            text = record.get("value_base64")
            raw = None if text is None else base64.b64decode(text)
            if "value_base64 holds the first" in str(record.get("error")):  # cut to fit
                if not (raw and expected.value and expected.value.startswith(raw)):
                    self.bad_raw += 1
            elif digest(raw) != sent.digests[index]:
                self.bad_raw += 1


def drain(consumer: Consumer, sent: Sent, tally: Tally, dlq: str) -> int:
    count = 0
    for message in consumer.consume(num_messages=2_000, timeout=0.5):
        if message.error():
            continue
        tally.take(sent, str(message.topic()), message.value(), dlq)
        count += 1
    return count


def caught_up(consumer: Consumer, partitions: list[TopicPartition]) -> bool:
    """Has the consumer read every output partition to its current end?"""
    for tp, position in zip(partitions, consumer.position(partitions), strict=True):
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        if high > 0 and position.offset < high:
            return False
    return True


def problems_in_log(text: str) -> list[str]:
    markers = ("Traceback", "crashed", "CRITICAL")
    return [line[:300] for line in text.splitlines() if any(m in line for m in markers)]


def run(bootstrap: str, events: int, seed: int = 42, max_bytes: int = 65_536,
        good_every: int = 4, timeout: float | None = None,
        only: list[str] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    run_id = f"fuzz{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    generator = HostileInput(seed, max_bytes=max_bytes, run=run_id)
    records = list(generator.events(events, good_every=good_every, only=only))
    log(f"generated {len(records):,} records ({events:,} bad) in "
        f"{time.monotonic() - started:.1f}s; starting a worker (log: {tmp / 'worker.log'})")
    gate = harness.start_worker(bootstrap, tmp, run_id, {
        "OUTBOUND_GATE_MAX_MESSAGE_BYTES": str(max_bytes),
        "OUTBOUND_GATE_PARTITIONS": str(PARTITIONS),
        "OUTBOUND_GATE_LOG_LEVEL": "warning",
        # The good messages go to a few users, many a second: with the pair rate limit
        # enforced, which of them are refused depends on the pace of the run, and every
        # expectation here is the record's own. In monitor mode the rule is still evaluated.
        "OUTBOUND_GATE_POLICY_FILE": str(write_timing_free_policy(tmp)),
    }, wait=False)
    harness.wait_ready(gate, timeout=300)
    topics = gate.topics
    outputs = [topics.accepted, topics.rejected, topics.dlq]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{run_id}-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "fetch.max.bytes": 52_428_800})
    metadata = consumer.list_topics(timeout=30)
    partitions = [TopicPartition(t, p, 0) for t in outputs
                  for p in sorted(metadata.topics[t].partitions)]
    consumer.assign(partitions)
    tally = Tally()
    try:
        produce_started = time.monotonic()
        sent = produce(bootstrap, gate, records)
        log(f"produced {len(records):,} records in {time.monotonic() - produce_started:.1f}s")
        deadline = time.monotonic() + (timeout or 180 + len(records) / 150)
        last_report = 0.0
        expected = sum(1 for r in records if r.expect != "none") - sent.failed
        while len(tally.outputs) < expected:
            drain(consumer, sent, tally, topics.dlq)
            if gate.process.poll() is not None:
                log(f"the worker exited with {gate.process.returncode}")
                break
            now = time.monotonic()
            if now > deadline:
                log("deadline passed")
                break
            if now - last_report > 15:
                log(f"  {len(tally.outputs):,} / {expected:,} inputs have their output")
                last_report = now
                if problems_in_log(gate.log()):
                    log("the worker's log shows a crash")
                    break
        elapsed = time.monotonic() - produce_started
        # Whatever else is already in the output topics counts too (extras, duplicates).
        drain_deadline = time.monotonic() + 60
        while not caught_up(consumer, partitions) and time.monotonic() < drain_deadline:
            drain(consumer, sent, tally, topics.dlq)
        alive = gate.process.poll() is None
        rss = round(peak_rss_mb(gate.process.pid)) if alive else None
    finally:
        consumer.close()
        code = harness.stop_worker(gate) if gate.process.poll() is None else None
    problems = problems_in_log(gate.log())
    lost = [i for i, r in enumerate(records) if r.expect != "none" and not tally.outputs[i]]
    extra = sum(n - 1 for n in tally.outputs.values() if n > 1) + len(tally.unmatched)
    categories = Counter(r.category for r in records)
    summary: dict[str, Any] = {
        "events": len(records), "bad": events, "good": categories["good"],
        "valid_state_events": categories["state_good"],
        "seed": seed, "max_message_bytes": max_bytes, "partitions": PARTITIONS,
        "produce_failed": sent.failed,
        "by_category": dict(sorted(categories.items())),
        "expected": dict(sorted(Counter(r.expect for r in records).items())),
        "outputs": dict(sorted(tally.outcomes.items())),
        "matched": sum(1 for i, n in tally.outputs.items() if n == 1 and i not in tally.wrong),
        "mismatched": len(tally.mismatched), "lost": len(lost), "extra": extra,
        "dead_letter_bytes_differ": tally.bad_raw,
        "worker_alive": alive, "worker_exit_on_sigterm": code, "log_problems": len(problems),
        "worker_peak_rss_mb": rss, "elapsed_s": round(elapsed, 1),
        "events_per_s": round(len(records) / elapsed) if elapsed else None,
        "command": " ".join(["python -m tests.benchmarks.hostile", *sys.argv[1:]])
        if __name__ == "__main__" else f"tests.benchmarks.hostile.run(events={events})",
    }
    for sample in tally.mismatched[:10]:
        log(f"  mismatch: {sample}")
    for sample in tally.unmatched[:5]:
        log(f"  unmatched output: {sample}")
    for index in lost[:10]:
        value = records[index].value
        log(f"  lost: {records[index].category} {records[index].expect} "
            f"{value[:100] if value else value!r}")
    for line in problems[:10]:
        log(f"  worker log: {line}")
    summary["ok"] = ok(summary)
    return summary


def ok(summary: dict[str, Any]) -> bool:
    return bool(summary["worker_alive"] and summary["worker_exit_on_sigterm"] == 0
                and not (summary["mismatched"] or summary["lost"] or summary["extra"]
                         or summary["produce_failed"] or summary["log_problems"]
                         or summary["dead_letter_bytes_differ"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="bad events (100000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-bytes", type=int, default=65_536,
                        help="the worker's OUTBOUND_GATE_MAX_MESSAGE_BYTES (65536); over-max "
                        "records must still fit under the broker's 1 MB limit")
    parser.add_argument("--good-every", type=int, default=4,
                        help="a good event after every N bad ones (4)")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--only", nargs="*", choices=sorted(WEIGHTS),
                        help="bad events of these categories only")
    args = parser.parse_args()
    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    summary = run(bootstrap, args.events, args.seed, args.max_bytes, args.good_every,
                  args.timeout, args.only)
    RESULTS.mkdir(exist_ok=True)
    name = "hostile-latest.json" if args.events >= 10_000 else "hostile-quick.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
