"""The route step's CPU cost per record, without Kafka (a figure, not a test).

    .venv/bin/python -m tests.benchmarks.router_cpu [--events 200000] [--store rocksdb]
        [--gc-freeze]

The same loadgen records the benchmark preloads, each on the partition its key hashes to, run
through the worker's GateProcessor and a StreamTask's store in batches of 500 (each batch's changes
committed, as after a transaction). The broker's share of the cost is left out, so this shows
what the Python work per record costs and how a change moves it; `make bench` stays the
figure of record. --peer-rules then runs the same records through the benchmark peers' rules
(what the Quix app does per record besides Quix itself) and prints the ratio.

It also prints the full (generation 2) garbage collections during the routing and their
pauses, CPU time of this thread (a neighbour's load stays out); --gc-freeze installs the
worker's processors.runtime.gc_pauses first, so that runs with and without it compare what
the freeze saves per collection."""

from __future__ import annotations

import argparse
import cProfile
import gc
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from processors.core.decode import DecodeError
from processors.core.enrich import _parse_number, parse_recipient
from processors.core.policy import RecipientState
from processors.core.policy import state as st
from processors.runtime import gc_pauses
from processors.runtime.engine.partitioner import partition_for_bytes
from processors.runtime.engine.records import Output, Record
from processors.runtime.engine.state_store import open_store
from processors.settings import Topics
from processors.tools.loadgen import Workload
from tests.benchmarks.peers.common import Rules, apply_template, dead_letter
from tests.benchmarks.throughput import limits_policy
from tests.unit.runtime.fakes import make_router

PARTITIONS = 8
BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the routing")
    parser.add_argument("--messaging-limit", type=int, metavar="N",
                        help="pin every tenant's messaging limit to N (the tenant stage, "
                             "stepped into directly as on one worker)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="install the worker's gc_pauses (freeze what survives each full "
                             "collection) before routing")
    parser.add_argument("--peer-rules", action="store_true",
                        help="also run the same records through the benchmark peers' rules "
                             "(tests/benchmarks/peers/common.py, as the Quix app applies "
                             "them: decode, the pure core, state as JSON per record) and "
                             "print both rates and their ratio")
    args = parser.parse_args()
    topics = Topics()
    now = time.time()
    workload = Workload(seed=42)
    router = make_router(PARTITIONS, loadgen_catalog=list(workload.catalog(now)))
    names = {"outbound": topics.outbound, "statuses": topics.statuses,
             "inbound": topics.inbound, "preferences": topics.preferences}
    batches: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    offsets: Counter[tuple[str, int]] = Counter()
    records = []
    for event in workload.events(args.events, now):
        partition = partition_for_bytes(event.key, PARTITIONS) if event.key else 0
        topic = names[event.topic]
        records.append(Record(topic, partition, offsets[(topic, partition)], event.key,
                              event.value, now))
        offsets[(topic, partition)] += 1
    data = Path(tempfile.mkdtemp(prefix="router-cpu-"))
    stores = {p: open_store(args.store, data, p) for p in range(PARTITIONS)}
    if args.messaging_limit:
        router.holder.current = limits_policy(args.messaging_limit)
        router.attach(stores.get)
    pending: list[Record] = list(records)
    handled = outputs = 0
    profile = cProfile.Profile() if args.profile else None
    # The harness's own objects (the records above) are frozen in both variants: what is
    # compared is what the routing builds and keeps (caches, state).
    gc.collect()
    gc.freeze()
    if args.gc_freeze:
        gc_pauses.install()
    pauses = FullCollections()
    if profile:
        profile.enable()
    started = time.perf_counter()
    while pending:  # re-keyed records come back through the "repartition topic"
        rekeyed: list[Record] = []
        for record in pending:
            batches[record.partition].append(record)
        for partition, batch in batches.items():
            for start in range(0, len(batch), BATCH):
                out: list[Output] = []
                tally: Counter[tuple[object, ...]] = Counter()
                for record in batch[start:start + BATCH]:
                    router.handle(record, stores[partition], out, tally, now)
                router.flush(out)
                for store in stores.values():  # this batch's and any it stepped into
                    if store.pending or store is stores[partition]:
                        store.committed(store.checkpoint() + len(out))
                handled += min(BATCH, len(batch) - start)
                outputs += len(out)
                rekeyed += [Record(o.topic, o.partition or 0, 0, o.key, o.value, now)
                            for o in out if o.topic == router.rekeyed]
            batch.clear()
        pending = rekeyed
    seconds = time.perf_counter() - started
    if profile:
        profile.disable()
        profile.dump_stats(args.profile)
    gc.callbacks.remove(pauses.observe)
    print(f"{handled:,} records ({len(records):,} input) in {seconds:.2f} s: "
          f"{handled / seconds:,.0f} records/s, {outputs:,} outputs ({args.store})")
    ms = sorted(pauses.ms)
    print(f"full collections {'with' if args.gc_freeze else 'without'} the freeze: {len(ms)}, "
          f"pause ms (thread CPU) total {sum(ms):.0f}, max {max(ms, default=0):.1f}, "
          f"median {ms[len(ms) // 2] if ms else 0:.1f}; objects tracked at the end "
          f"{len(gc.get_objects()):,}, frozen {gc.get_freeze_count():,}")
    if args.peer_rules:
        peer_seconds = peer_rules(workload, records, now)
        print(f"peer rules: {len(records):,} records in {peer_seconds:.2f} s: "
              f"{len(records) / peer_seconds:,.0f} records/s; router / peer rules "
              f"{peer_seconds / seconds:.2f} (input records "
              "per second, neither with Kafka)")


class FullCollections:
    """Each generation-2 collection's CPU time on this thread, ms, from gc.callbacks."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.began = 0.0
        gc.callbacks.append(self.observe)

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self.began = time.thread_time()
        else:
            self.ms.append((time.thread_time() - self.began) * 1000)


def peer_rules(workload: Workload, records: list[Record], now: float) -> float:
    """Seconds the peers' rules take over the same records: what the Quix app does per record
    besides Quix itself (decode, Rules, the state read and written as JSON)."""
    parse_recipient.cache_clear()  # as cold as the router found them
    _parse_number.cache_clear()
    rules = Rules()
    catalog: dict[str, Any] = {}
    for entry in workload.catalog(now):
        apply_template(catalog, entry.key, entry.value)
    contracts = Topics().contracts()
    states: dict[bytes | None, list[Any]] = {}
    started = time.perf_counter()
    for record in records:
        key = record.key

        def state_of(_: str, key: bytes | None = key) -> RecipientState:
            return st.from_json(states.get(key))

        try:
            _, new = rules.record(contracts[record.topic], record.value, catalog, state_of, now)
        except DecodeError as error:
            dead_letter(record.topic, record.partition, record.offset, key, record.value, error)
            continue
        if new is not None:
            states[key] = st.to_json(new)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
