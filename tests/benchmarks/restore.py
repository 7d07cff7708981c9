"""`make bench-restore`: a worker's cold and warm restore of 1,000,000 recipients' state, and
the memory of the whole pod (worker + query server) holding it.

    .venv/bin/python -m tests.benchmarks.restore [--quick] [--records 1000000]
        [--backlog 200000] [--checks-per-second 500] [--check-seconds 30] [--no-memory]

1. Seed: a fresh app id (`bench-restore-<time>`, so every topic is new), the gate's topics
   created by the gate's own ensure_topics, and --records state records written to the
   recipient-state changelog exactly as the route loop writes them: values encoded by
   processors.core.policy.state.to_bytes, keys `tenant:+E164` in the partition they hash to
   (routing.partition_for), Outputs sent through a RecordCollector on the route loop's own
   transactional producer, one transaction per OUTBOUND_GATE_BATCH_RECORDS keys. The keys are
   the load generator's 200,000 recipients under its five busiest tenants (1,000,000 keys), so
   the workload's traffic below reads state that exists; each state holds what a recipient's
   record holds after an inbound message and an accepted template: an inbound time, a decided
   message id and a pair budget.
2. Cold: a real worker (`processors.cli.main worker`, as the e2e tests start it) on an empty
   data directory: seconds from its start to /readyz answering 200, the keys its `restore` log
   lines report and the restore's own seconds (route_assignment's restore_seconds), and the
   process tree's peak RSS.
3. Warm: SIGTERM, the same worker on the same data directory: seconds to ready and what it
   restored (only the tail after its checkpoint).
4. Memory (unless --no-memory), on that worker with the state in it: the process tree's peak
   RSS (a) draining a backlog of --backlog workload events (saturation), (b) under
   --checks-per-second checks/s to POST /v1/check (tests.benchmarks.check_api's client), and
   (c) both at once; --rounds times in turn (memory a process takes is rarely given back, so
   a later round shows whether the peak still grows).

Peak RSS of the tree: the worker and its children (the query server, multiprocessing's
resource tracker). Two figures per phase: the sum of each process's VmHWM (reset at the
phase's start through /proc/<pid>/clear_refs, which root may write; an upper bound: each
process's own peak, added), and the largest sum of VmRSS sampled every 50 ms (a lower bound).

Writes tests/benchmarks/results/restore.json (restore-quick.json with --quick). No recipient
is printed or logged; the worker's log is scanned for the checked numbers at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from processors.core.policy import state as st
from processors.runtime import kafka_clients, topics
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.record_collector import RecordCollector
from processors.runtime.engine.records import Output
from processors.settings import Settings, from_env
from processors.tools.loadgen import Workload
from tests.benchmarks.check_api import (
    CheckClient,
    check_bodies,
    check_figures,
    child_pids,
    numbers_in_log,
)
from tests.benchmarks.throughput import (
    RESULTS,
    Visibility,
    drop_topics,
    gate_env,
    log,
    machine,
    produce,
)
from tests.e2e import conftest as harness

READY_TARGET_SECONDS = 30.0  # issue 31: a cold restore of 1,000,000 records, ready in 30 s
TENANTS_IN_STATE = 5  # the workload's busiest tenants, each with every recipient in state
SAMPLE_SECONDS = 0.05  # RSS sampling interval of the process tree
READY_TIMEOUT_SECONDS = 900.0


# -- seeding the changelog, with the gate's own code -------------------------------------------

def state_keys(workload: Workload, count: int) -> Iterator[str]:
    """`tenant:+E164` keys, recipient-major over the workload's busiest tenants."""
    made = 0
    for recipient in workload.recipients:
        for tenant in workload.tenants[:TENANTS_IN_STATE]:
            if made == count:
                return
            yield st.state_key(tenant, recipient)
            made += 1
    if made < count:
        raise SystemExit(f"the workload has {made:,} keys, fewer than {count:,}")


def recipient_value(index: int, now: float) -> bytes:
    """What a recipient's record holds after an inbound message and an accepted template, as
    the route loop encodes it. Recent times: neither the sweep nor de-duplication drops them
    while the bench runs (the dedup window is an hour, the service window 24 hours)."""
    state = st.with_inbound(st.EMPTY, now - 1800 - index % 1800)
    sent_at = now - index % 300
    state = st.with_decided(state, f"lg-seed-{index:09d}", sent_at)
    return st.to_bytes(st.with_send(state, "", sent_at, 6.0))


def seed_changelog(settings: Settings, workload: Workload, count: int) -> dict[str, Any]:
    """count state records in the changelog, as the route loop writes them: Outputs through a
    RecordCollector on its transactional producer, one transaction per batch_records keys."""
    collector = RecordCollector(settings.changelog_topic)
    producer = kafka_clients.route_producer(settings, f"{settings.app_id}-seed",
                                            collector.delivered)
    producer.init_transactions(60)
    now, started = time.time(), time.monotonic()
    batch: list[Output] = []
    value_bytes = transactions = 0
    ends: dict[int, int] = {}

    def commit() -> None:
        nonlocal transactions
        producer.begin_transaction()
        collector.send(producer, batch)
        ends.update(collector.flush(producer))
        producer.commit_transaction(60)
        transactions += 1
        batch.clear()

    for index, key in enumerate(state_keys(workload, count)):
        value = recipient_value(index, now)
        value_bytes += len(value)
        raw = key.encode("utf-8")
        batch.append(Output(settings.changelog_topic, raw, value,
                            partition_for(key, settings.partitions)))
        if len(batch) == settings.batch_records:
            commit()
        if index and index % 200_000 == 0:
            log(f"    {index:,} records written")
    if batch:
        commit()
    seconds = time.monotonic() - started
    return {"records": count, "transactions": transactions, "seconds": round(seconds, 1),
            "records_per_s": round(count / seconds), "value_bytes_mean": round(
                value_bytes / count, 1), "changelog_end_offsets": dict(sorted(ends.items()))}


# -- the process tree's memory -----------------------------------------------------------------

def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    pids, index = [pid], 0
    while index < len(pids):
        pids += child_pids(pids[index])
        index += 1
    return pids


def status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:  # gone since it was listed
        pass
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class RssSampler(threading.Thread):
    """The tree's summed VmRSS every SAMPLE_SECONDS, its largest since reset(); and each
    process's VmHWM, reset with reset() where /proc/<pid>/clear_refs may be written."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.hwm_resettable = True
        self.done = threading.Event()
        self.lock = threading.Lock()  # a sample taken before reset() must not land after it

    def sample(self) -> None:
        with self.lock:
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in tree(self.pid)))

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):  # the sampling interval
            self.sample()

    def reset(self) -> None:
        with self.lock:
            self.peak_kb = 0
        for pid in tree(self.pid):
            try:  # "5": reset the peak resident set size (Linux 4.0+)
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                self.hwm_resettable = False

    def figures(self) -> dict[str, Any]:
        """Peak RSS (MB) of the tree now: per process VmHWM, their sum, the sampled peak."""
        processes = {f"{comm(p)}[{p}]": round(status_kb(p, "VmHWM") / 1024, 1)
                     for p in tree(self.pid)}
        self.sample()
        return {"peak_rss_mb_sum_of_hwm": round(sum(processes.values()), 1),
                "peak_rss_mb_sampled": round(self.peak_kb / 1024, 1),
                "rss_mb_now": round(sum(status_kb(p, "VmRSS") for p in tree(self.pid)) / 1024, 1),
                "hwm_mb_by_process": processes,
                "hwm_reset_at_phase_start": self.hwm_resettable}


# -- one worker life ---------------------------------------------------------------------------

@dataclass
class Life:
    """A worker started on the bench's data directory, timed to ready."""

    gate: harness.Gate
    started: float
    sampler: RssSampler
    log_from: int  # where this life's lines start in the (appended) log
    ready_seconds: float = 0.0
    restore: dict[str, Any] = field(default_factory=dict)


def readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def start_life(bootstrap: str, tmp: Path, env: dict[str, str]) -> Life:
    log_path = tmp / "worker.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0
    started = time.monotonic()
    gate = harness.start_worker(bootstrap, tmp, "restore", env, wait=False)
    sampler = RssSampler(gate.process.pid)
    sampler.start()
    life = Life(gate, started, sampler, log_from)
    deadline = started + READY_TIMEOUT_SECONDS
    while readyz(gate.base_url) != 200:
        if gate.problem():
            raise SystemExit(gate.problem())
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready after {READY_TIMEOUT_SECONDS:.0f} s; log {log_path}")
        time.sleep(0.02)  # poll interval of the measured wait for /readyz (with its deadline)
    life.ready_seconds = time.monotonic() - started
    life.restore = restore_figures(log_path, log_from)
    return life


def restore_figures(log_path: Path, log_from: int) -> dict[str, Any]:
    """What the worker's log says it restored: per partition the `restore` lines (keys, from,
    to), and the assignment's restore_seconds."""
    with open(log_path, "rb") as handle:
        handle.seek(log_from)
        lines = handle.read().decode(errors="replace").splitlines()
    keys = offsets = 0
    partitions: dict[int, int] = {}
    restore_seconds = 0.0
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "restore":
            keys += int(entry["keys"])
            offsets += int(entry["to"]) - int(entry["from"])
            partitions[int(entry["partition"])] = int(entry["keys"])
        elif entry.get("event") == "route_assignment":
            restore_seconds += float(entry.get("restore_seconds", 0.0))
    return {"keys": keys, "changelog_offsets_read": offsets, "restore_seconds": round(
        restore_seconds, 2), "keys_per_s_of_restore": round(keys / restore_seconds)
        if restore_seconds else None, "keys_by_partition": dict(sorted(partitions.items()))}


def stop_life(life: Life) -> dict[str, Any]:
    """SIGTERM and wait; the tree's memory figures of the whole life."""
    figures = life.sampler.figures()
    life.sampler.done.set()
    life.gate.process.send_signal(signal.SIGTERM)
    try:
        code = life.gate.process.wait(timeout=90)
    except Exception:
        life.gate.process.kill()
        raise
    if code != 0:
        raise SystemExit(f"the worker exited with {code} on SIGTERM; log {life.gate.log_path}")
    return figures


def life_summary(name: str, life: Life, records: int) -> dict[str, Any]:
    restored = life.restore["keys"]
    data = Path(life.gate.env["OUTBOUND_GATE_DATA_DIR"])
    result = {"seconds_to_ready": round(life.ready_seconds, 2),
              "keys_restored": restored,
              # The volume a pod needs for this state (RocksDB files, the query server's).
              "data_dir_mb": round(sum(f.stat().st_size for f in data.rglob("*")
                                       if f.is_file()) / 2**20, 1),
              # From the process's start: what an orchestrator waits for.
              "keys_per_s_to_ready": round(restored / life.ready_seconds),
              **life.restore, **life.sampler.figures()}
    log(f"  {name}: ready in {life.ready_seconds:.1f} s, {restored:,} of {records:,} keys "
        f"restored in {life.restore['restore_seconds']} s "
        f"({life.restore['keys_per_s_of_restore'] or 0:,} keys/s); peak RSS of the tree "
        f"{result['peak_rss_mb_sum_of_hwm']} MB (sum of VmHWM), "
        f"{result['peak_rss_mb_sampled']} MB sampled")
    return result


# -- the memory phases -------------------------------------------------------------------------

@dataclass
class MemoryBench:
    bootstrap: str
    prefix: str
    workload: Workload
    life: Life
    watcher: Visibility
    client: CheckClient
    checks_per_second: float
    check_seconds: float

    def backlog(self, events: int) -> tuple[list[tuple[str, bytes | None, bytes | None]],
                                            list[str]]:
        records = [(f"{self.prefix}.{r.topic}", r.key, r.value)
                   for r in self.workload.events(events, time.time())]
        ids = [orjson.loads(value)["message_id"] for _, _, value in records
               if value and value.startswith(b'{"schema_version"')]
        return records, ids

    def wait_decided(self, ids: list[str], timeout: float) -> None:
        deadline, reported = time.monotonic() + timeout, time.monotonic()
        while (missing := sum(1 for m in ids if m not in self.watcher.seen)) > 0:
            if self.life.gate.problem():
                raise SystemExit(self.life.gate.problem())
            if time.monotonic() > deadline:
                raise SystemExit(f"{missing:,} decisions not visible after {timeout:.0f} s")
            if time.monotonic() - reported > 10:
                log(f"      {len(ids) - missing:,} / {len(ids):,} decisions")
                reported = time.monotonic()
            time.sleep(0.1)  # poll interval of a measured wait with a deadline

    def phase(self, name: str, events: int, checks: bool) -> dict[str, Any]:
        records, ids = self.backlog(events) if events else ([], [])
        self.life.sampler.reset()
        began = time.monotonic()
        if checks:  # stopped below; the client's own limit is only a backstop
            self.client.start(self.life.gate.base_url, self.checks_per_second,
                              self.check_seconds + 600)
        try:
            if events:
                produce(self.bootstrap, records)
                self.wait_decided(ids, 120 + events / 200)
            else:
                time.sleep(self.check_seconds)  # the checks' window (the client paces them)
        finally:
            run = self.client.stop() if checks else None
        seconds = time.monotonic() - began
        result: dict[str, Any] = {"phase": name, "events": events, "decisions": len(ids),
                                  "seconds": round(seconds, 1), **self.life.sampler.figures()}
        if events:
            visible = [self.watcher.seen[m] for m in ids]
            span = max((max(visible) - min(visible)) / 1000, 1e-3)
            result["events_per_s"] = round(events / span)
        text = ""
        if run is not None:
            figures = check_figures([run])
            result["checks"] = {key: figures[key] for key in (
                "sent", "achieved_per_s", "latency", "non_200", "statuses")}
            text = (f", {figures['sent']:,} checks at {figures['achieved_per_s']}/s "
                    f"p99 {figures['latency'].get('p99_ms')} ms, non-200 {figures['non_200']}")
        log(f"    {name}: {seconds:.1f} s{text}; peak RSS of the tree "
            f"{result['peak_rss_mb_sum_of_hwm']} MB (sum of VmHWM), "
            f"{result['peak_rss_mb_sampled']} MB sampled")
        return result


# -- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, help="state records (1,000,000; 20,000 quick)")
    parser.add_argument("--backlog", type=int,
                        help="events of the saturated phases (200,000; 5,000 quick)")
    parser.add_argument("--checks-per-second", type=float, default=500.0)
    parser.add_argument("--check-seconds", type=float,
                        help="length of the checks-only phase (30; 5 quick)")
    parser.add_argument("--rounds", type=int,
                        help="times the three memory phases run, in turn (2; 1 quick)")
    parser.add_argument("--sweep-seconds", type=int, default=60,
                        help="the worker's OUTBOUND_GATE_STATE_SWEEP_SECONDS (60; the default is "
                             "600): a sweep lists and reads every key of a partition, so the "
                             "memory phases include sweeps of the whole state")
    parser.add_argument("--no-memory", action="store_true",
                        help="cold and warm restarts only, no memory phases")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the worker (repeatable)")
    parser.add_argument("--keep-topics", action="store_true",
                        help="leave the run's topics on the broker")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    for name, full, quick in (("records", 1_000_000, 20_000), ("backlog", 200_000, 5_000),
                              ("check_seconds", 30.0, 5.0), ("rounds", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    out = args.output or RESULTS / ("restore-quick.json" if args.quick else "restore.json")

    bootstrap = harness.bootstrap.__wrapped__()  # type: ignore[attr-defined]
    load_start = os.getloadavg()[0]
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    app_id = f"bench-restore-{stamp}"
    prefix = f"bench.restore.{stamp}"
    token = f"bench-{uuid.uuid4().hex}"
    env = {**gate_env(prefix, "gate"), "OUTBOUND_GATE_APP_ID": app_id,
           "OUTBOUND_GATE_LOG_LEVEL": "info", "OUTBOUND_GATE_API_TOKEN": token,
           "OUTBOUND_GATE_STATE_SWEEP_SECONDS": str(args.sweep_seconds),
           **dict(item.split("=", 1) for item in args.worker_env)}
    settings = from_env({**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    tmp = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    log(f"app id {app_id}, {settings.partitions} partitions; building the workload")
    workload = Workload(42)
    summary: dict[str, Any] = {}
    life: Life | None = None
    client: CheckClient | None = None
    watcher: Visibility | None = None
    try:
        topics.ensure_topics(settings)
        produce(bootstrap, [(f"{prefix}.{r.topic}", r.key, r.value)
                            for r in workload.catalog(time.time())])
        log(f"  writing {args.records:,} state records to {settings.changelog_topic}")
        seeded = seed_changelog(settings, workload, args.records)
        log(f"  seeded in {seeded['seconds']} s ({seeded['records_per_s']:,} records/s, "
            f"{seeded['transactions']:,} transactions)")

        log("  cold start, empty data directory")
        life = start_life(bootstrap, tmp, env)
        cold = life_summary("cold", life, args.records)
        cold["whole_life"] = stop_life(life)
        log("  warm restart: SIGTERM, the same data directory")
        life = start_life(bootstrap, tmp, env)
        warm = life_summary("warm", life, args.records)
        memory: list[dict[str, Any]] = []
        if not args.no_memory:
            bodies, recipients = check_bodies(workload, max(2_000, int(
                args.checks_per_second * args.check_seconds)))
            client = CheckClient(token, bodies, 8)
            watcher = Visibility(bootstrap, [env["OUTBOUND_GATE_TOPIC_ACCEPTED"],
                                             env["OUTBOUND_GATE_TOPIC_REJECTED"]])
            watcher.start()
            bench = MemoryBench(bootstrap, prefix, workload, life, watcher, client,
                                args.checks_per_second, args.check_seconds)
            log(f"    warm-up checks: {client.warm(life.gate.base_url, 2_000)['statuses']}")
            log(f"  memory with {args.records:,} recipients in state")
            for round_ in range(1, args.rounds + 1):  # again: does the peak still grow?
                memory.append(bench.phase(f"saturated-{round_}", args.backlog, checks=False))
                memory.append(bench.phase(f"checks-{round_}", 0, checks=True))
                memory.append(bench.phase(f"saturated_with_checks-{round_}", args.backlog,
                                          checks=True))
            text = life.gate.log_path.read_text(errors="replace")
            summary["phone_numbers_in_worker_log"] = numbers_in_log(text, recipients)
            # Partition sweeps the warm life made (one line each; 8 make a sweep of it all).
            summary["partition_sweeps_warm"] = text[life.log_from:].count(
                '"event": "state_sweep"')
        warm["whole_life"] = stop_life(life)
        life = None
        summary.update({
            "records": args.records, "partitions": settings.partitions,
            "ready_target_seconds": READY_TARGET_SECONDS,
            "cold_ready_within_target": cold["seconds_to_ready"] <= READY_TARGET_SECONDS,
            "seed": seeded, "cold": cold, "warm": warm, "memory": memory,
            "settings": {"backlog": args.backlog, "checks_per_second": args.checks_per_second,
                         "rounds": args.rounds, "sweep_seconds": args.sweep_seconds,
                         "check_seconds": args.check_seconds, "worker_env": args.worker_env,
                         "quick": args.quick},
            "machine": machine(),
            # Other sessions share this machine: its load when the run began and ended.
            "loadavg_1m": {"start": load_start, "end": os.getloadavg()[0]},
            "command": " ".join(["python -m tests.benchmarks.restore", *sys.argv[1:]])})
    finally:
        if client is not None:
            client.close()
        if watcher is not None:
            watcher.done.set()
            watcher.join(10)
        if life is not None and life.gate.process.poll() is None:
            life.gate.process.kill()
            life.gate.process.wait(30)
        if not args.keep_topics:
            drop_topics(bootstrap, app_id)
            drop_topics(bootstrap, prefix)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    print(f"written to {out}")


def print_summary(summary: dict[str, Any]) -> None:
    cold, warm = summary["cold"], summary["warm"]
    print(f"restore of {summary['records']:,} state records, {summary['partitions']} partitions, "
          f"{summary['machine']['cpus']} cores")
    print(f"  cold: ready in {cold['seconds_to_ready']} s (target "
          f"{summary['ready_target_seconds']:.0f} s: "
          f"{'met' if summary['cold_ready_within_target'] else 'MISSED'}); "
          f"{cold['keys_restored']:,} keys in {cold['restore_seconds']} s of restore "
          f"({cold['keys_per_s_of_restore'] or 0:,} keys/s; {cold['keys_per_s_to_ready']:,}/s "
          f"from start); peak RSS {cold['peak_rss_mb_sum_of_hwm']} MB")
    print(f"  warm: ready in {warm['seconds_to_ready']} s, {warm['keys_restored']:,} keys "
          f"restored; peak RSS to ready {warm['peak_rss_mb_sum_of_hwm']} MB")
    for phase in summary["memory"]:
        print(f"  {phase['phase']}: peak RSS {phase['peak_rss_mb_sum_of_hwm']} MB (sum of VmHWM),"
              f" {phase['peak_rss_mb_sampled']} MB sampled"
              + (f", {phase['events_per_s']:,} events/s" if "events_per_s" in phase else "")
              + (f", checks p99 {phase['checks']['latency'].get('p99_ms')} ms"
                 if "checks" in phase else ""))


if __name__ == "__main__":
    main()
