"""Self-check of one contender against the real broker (a figure, not a pytest test).

    python -m tests.benchmarks.peers.selfcheck ceiling|faust_plain|quix_app [--messages 2000]

Creates topics bench.selfcheck.<random>.* (8 partitions), produces N outbound messages keyed
"acme:+1416555XXXX", one catalog entry, a few delivery statuses and 10 malformed values, starts
the contender, waits (polling end offsets, with a deadline) until --output holds every record
expected (N + 10 for the gate contenders, everything produced for ceiling), prints the
throughput from READY to the last record and what the output holds, then SIGTERMs the contender
and checks it exits 0. The run's topics are deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from processors.core.timeutil import format_rfc3339
from tests.benchmarks.peers.common import SUFFIXES

PARTITIONS = 8
MALFORMED = 10
STATUSES = 5
REPO = Path(__file__).resolve().parents[3]


def produce_inputs(bootstrap: str, prefix: str, messages: int) -> int:
    """Preload the inputs; returns how many records were produced."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    now = format_rfc3339(time.time())
    sent = 0

    def send(suffix: str, key: str, value: bytes) -> None:
        nonlocal sent
        producer.send(f"{prefix}.{suffix}", key=key.encode(), value=value)
        sent += 1

    send("templates", "acme:promo:en_US", orjson.dumps({
        "tenant_id": "acme", "name": "promo", "language": "en_US", "category": "MARKETING",
        "status": "APPROVED", "updated_at": "2025-01-01T00:00:00Z"}))
    for index in range(STATUSES):
        recipient = f"+1416555{index:04d}"
        send("statuses", f"acme:{recipient}", orjson.dumps({
            "tenant_id": "acme", "recipient": recipient, "status": "failed", "timestamp": now,
            "errors": [{"code": 131049}]}))
    for index in range(messages):
        recipient = f"+1416555{index % 10_000:04d}"
        send("outbound", f"acme:{recipient}", orjson.dumps({
            "message_id": f"m-{index}", "tenant_id": "acme", "recipient": recipient,
            "kind": "template", "template": {"name": "promo", "language": "en_US"},
            "created_at": now}))
    for index in range(MALFORMED):
        send("outbound", f"acme:+1416555{index:04d}", b"{bad")
    producer.flush()
    producer.close()
    return sent


def output_count(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> int:
    return sum(consumer.end_offsets(partitions).values())


def summarise(bootstrap: str, topic: str, expected: int) -> Counter[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    kinds: Counter[str] = Counter()
    for record in consumer:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            kinds["not json (copied input)"] += 1
            continue
        if "error_code" in value and "message" in value:
            kinds[f"rejected {value['error_code']}"] += 1
        elif "value_base64" in value:
            kinds[f"dead letter {value['reason']}"] += 1
        elif "decided_at" in value:
            kinds["accepted"] += 1
        else:
            kinds["other (copied input)"] += 1
        if sum(kinds.values()) >= expected:
            break
    consumer.close()
    return kinds


def read_lines(stream: IO[bytes], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.decode("utf-8", "replace").rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=["ceiling", "faust_plain", "quix_app"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the topics afterwards")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench.selfcheck.{run}"
    output = f"{prefix}.output"
    group = f"selfcheck-{args.peer}-{run}"
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    names = [f"{prefix}.{suffix}" for suffix in SUFFIXES] + [output]
    admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    admin.close()
    produced = produce_inputs(args.bootstrap, prefix, args.messages)
    expected = produced if args.peer == "ceiling" else args.messages + MALFORMED
    print(f"{prefix}: produced {produced} records; expecting {expected} on {output}")

    tmp = Path(tempfile.mkdtemp(prefix=f"peer-{args.peer}-"))
    stderr = (tmp / "stderr.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", f"tests.benchmarks.peers.{args.peer}", "--bootstrap",
         args.bootstrap, "--prefix", prefix, "--group", group,
         "--output", output], cwd=REPO, stdout=subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise SystemExit(f"no READY (exit {process.poll()}); see {tmp}/stderr.log")
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line == "READY":
                break
        ready_at = time.monotonic()
        print(f"READY after {ready_at - started:.1f} s")
        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap)
        partitions = [TopicPartition(output, p) for p in range(PARTITIONS)]
        count = 0
        while (count := output_count(consumer, partitions)) < expected:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"output holds {count}/{expected} (exit {process.poll()}); "
                                 f"see {tmp}/stderr.log")
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
        done = time.monotonic() - ready_at
        consumer.close()
        print(f"{count} output records {done:.2f} s after READY: "
              f"{produced / done:,.0f} input records/s")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        stderr.close()
    print(f"exit code after SIGTERM: {code}")
    for kind, number in sorted(summarise(args.bootstrap, output, expected).items()):
        print(f"  {kind}: {number}")
    extra = output_count_after(args.bootstrap, output)
    if extra != expected:
        print(f"  WARNING: output holds {extra}, expected {expected}")
    if not args.keep:
        delete_topics(args.bootstrap, (prefix, group))
    return 0 if code == 0 and extra == expected else 1


def delete_topics(bootstrap: str, parts: tuple[str, ...]) -> None:
    """The run's topics and the contender's internal ones (changelogs named after its group)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    doomed = [name for name in admin.list_topics() if any(part in name for part in parts)]
    if doomed:
        admin.delete_topics(doomed)
    groups = [group["group_id"] for group in admin.list_groups()
              if any(part in group["group_id"] for part in parts)]
    if groups:
        admin.delete_groups(groups)
    admin.close()


def output_count_after(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    total = output_count(consumer, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.close()
    return total


if __name__ == "__main__":
    sys.exit(main())
