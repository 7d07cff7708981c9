"""Benchmark: a worker holding state for N distinct recipients; memory and restart time.

    .venv/bin/python -m tests.benchmarks.state_footprint --recipients 1000000 [--store memory://]

Starts the local Kafka (or uses KAFKA_BOOTSTRAP_SERVERS), a worker, produces N inbound
messages for N distinct recipients (each opens a service window, so each stays in state),
waits until the worker has consumed them all, then prints the worker's resident memory, kills it
with SIGKILL, starts it again on the same data and prints the time until /readyz answers 200
and the first decision that needs the restored state.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from processors.core.timeutil import format_rfc3339
from processors.tools.kafka_io import producer
from tests.e2e import conftest as harness

TENANT = "bench"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def recipient(index: int) -> str:
    # Brazilian mobiles +55 11 9XXXX-XXXX: valid for every index below 40,000,000.
    return f"+55119{6_000_0000 + index:08d}"


def lag(bootstrap: str, group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    committed = admin.list_group_offsets(group)[group]
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    return sum(end - (committed[tp].offset if tp in committed else 0)
               for tp, end in ends.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--store", default="rocksdb://", choices=["rocksdb://", "memory://"])
    args = parser.parse_args()
    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    tmp = Path(tempfile.mkdtemp(prefix="state-footprint-"))
    run_id = uuid.uuid4().hex[:10]
    env = {"OUTBOUND_GATE_STORE": args.store, "OUTBOUND_GATE_LOG_LEVEL": "warning"}
    gate = harness.start_worker(bootstrap, tmp, run_id, env)
    baseline = rss_mb(gate.process.pid)
    print(f"worker up, RSS {baseline:.0f} MB; producing {args.recipients:,} inbound messages",
          flush=True)
    out = producer(bootstrap)
    stamp = format_rfc3339(time.time())
    started = time.monotonic()
    for index in range(args.recipients):
        e164 = recipient(index)
        value = orjson.dumps({"tenant_id": TENANT, "sender": e164, "timestamp": stamp})
        # Keyed as the gate keys state (tenant:e164): no repartition hop.
        out.send(gate.topics.inbound, key=f"{TENANT}:{e164}".encode(), value=value)
        if index % 100_000 == 0 and index:
            print(f"  produced {index:,}", flush=True)
    out.flush()
    out.close()
    group = gate.env["OUTBOUND_GATE_APP_ID"] + "-route"  # the route processor's group
    remaining = lag(bootstrap, group, gate.topics.inbound)
    while remaining > 0:
        if gate.problem():
            raise SystemExit(gate.problem())
        print(f"  worker still has {remaining:,} records to consume", flush=True)
        time.sleep(5)  # progress report interval of a wait on a measured condition
        remaining = lag(bootstrap, group, gate.topics.inbound)
    consumed_in = time.monotonic() - started
    held = rss_mb(gate.process.pid)
    disk = sum(f.stat().st_size for f in (tmp / "worker-data").rglob("*") if f.is_file())
    print(f"state for {args.recipients:,} recipients consumed in {consumed_in:.0f} s "
          f"({args.recipients / consumed_in:,.0f} events/s); worker RSS {held:.0f} MB, "
          f"state directory {disk / 2**20:.0f} MB", flush=True)

    os.kill(gate.process.pid, signal.SIGKILL)
    gate.process.wait()
    restart = time.monotonic()
    # The memory store replays the whole changelog before it is ready: allow for it.
    gate = harness.start_worker(bootstrap, tmp, run_id, env, wait=False)
    harness.wait_ready(gate, timeout=1800)
    ready = time.monotonic() - restart
    reader = gate.reader()
    probe = {"message_id": f"probe-{uuid.uuid4().hex[:8]}", "tenant_id": TENANT,
             "recipient": recipient(args.recipients - 1), "kind": "free_form",
             "created_at": format_rfc3339(time.time())}
    gate.send(gate.topics.outbound, probe["recipient"], probe)
    decided = reader.wait_for(lambda outs: bool(outs), 120, "the probe decision")[0]
    first_decision = time.monotonic() - restart
    restored = decided.topic == gate.topics.accepted
    after_restart = rss_mb(gate.process.pid)
    harness.stop_worker(gate)
    result = {
        "store": args.store,
        "recipients": args.recipients,
        "rss_mb_idle": round(baseline),
        "rss_mb_holding_state": round(held),
        "rss_mb_after_restart": round(after_restart),
        "state_dir_mb": round(disk / 2**20),
        "consume_seconds": round(consumed_in, 1),
        "ready_after_sigkill_seconds": round(ready, 1),
        "first_decision_after_sigkill_seconds": round(first_decision, 1),
        "state_restored": restored,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
