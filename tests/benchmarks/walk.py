"""The walk of one outbound message from the route loop to its decision: which functions of
processors/ it calls, in which files, and how often it enters a file again.

    .venv/bin/python -m tests.benchmarks.walk

A message to a user with state, at its home partition, handed to the route loop as a fetched
batch: through the task, the gate's processor, the batch's flush and the transaction's commit,
with in-memory stores and a producer that keeps what it is given. A call into processors/core/
counts as one stop (the core's own calls are not followed): the walk is about the runtime's
layering.

It prints two things:
- every call, in order, and the file sequence it makes (a file is entered again each time a
  function of it is called after one of another file: how much a reader jumps between files);
- the path to the decision: the chain of calls (the stack) from the loop to the core's step at
  the moment it decides, one file per layer; a reader following the message from the loop to
  its decision reads these files once each, in this order, and the helpers called on the way
  (state, catalog, metrics) are leaves that return to it.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry

from processors.core.policy import load_policy
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Record
from processors.runtime.engine.state_store import MemoryBackend, PartitionStore
from processors.runtime.engine.stream_thread import RouteLoop
from processors.runtime.engine.task import StreamTask
from processors.runtime.gate.processor import GateProcessor
from processors.runtime.metrics import GateMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings, Topics
from tests.factories import inbound, message, template_entry

ROOT = Path(__file__).resolve().parents[2] / "processors"
CORE = ROOT / "core"
PARTITIONS = 4
NUMBER = "+5511912345678"


STEP = ROOT / "core" / "step.py"


def walk() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(every call, in order; the stack of calls when the core's step decides)."""
    settings = Settings(partitions=PARTITIONS)
    catalog = CatalogReplica()
    entry = template_entry("notice", "UTILITY")
    catalog.data[f"acme:{entry['name']}:en_US"] = (entry,)
    metrics = GateMetrics(CollectorRegistry(), 100)
    processor = GateProcessor(settings, PolicyHolder(load_policy()), catalog, metrics)
    home = partition_for(f"acme:{NUMBER}", PARTITIONS)
    store = PartitionStore(home, MemoryBackend())
    task = StreamTask(home, store)
    now = parse_rfc3339("2026-12-01T12:00:00Z")
    opened = inbound(NUMBER, format_rfc3339(now - 60))  # the user wrote a minute ago
    task.process(processor, [Record(Topics().inbound, home, 0, None, orjson.dumps(opened),
                                    now)], now)
    processor.flush([])
    store.committed(1)
    sent = message(message_id="walked", recipient=NUMBER, kind="template",
                   template={"name": "notice", "language": "en_US"},
                   created_at=format_rfc3339(now))
    record = Record(Topics().outbound, home, 1, None, orjson.dumps(sent), now)
    calls: list[tuple[str, str]] = []
    decision: list[tuple[str, str]] = []  # the stack when the step decides
    depth_in_core = 0

    def profile(frame: FrameType, event: str, _: Any) -> None:
        nonlocal depth_in_core
        path = Path(frame.f_code.co_filename)
        if not path.is_relative_to(ROOT):
            return
        in_core = path.is_relative_to(CORE)
        if event == "call":
            if depth_in_core == 0:
                calls.append((str(path.relative_to(ROOT.parent)), frame.f_code.co_name))
            if path == STEP and frame.f_code.co_name == "decide" and not decision:
                decision.extend(stack(frame))
            if in_core:
                depth_in_core += 1
        elif event == "return" and in_core:
            depth_in_core -= 1

    # The route loop around the task, with a producer that keeps what it is given: the walk
    # starts where the worker's loop hands a fetched batch over.
    producer = KeptProducer()
    loop = RouteLoop(settings, processor, metrics, lambda: True)
    loop.tasks = cast(Any, SimpleNamespace(tasks={home: task}))
    loop.producer = cast(Any, producer)
    loop.consumer = cast(Any, SimpleNamespace(consumer_group_metadata=lambda: None))
    sys.setprofile(profile)
    try:
        loop.process([record], now)
    finally:
        sys.setprofile(None)
    assert Topics().accepted in producer.topics, "the message was not accepted"
    assert decision, "the core's step never decided"
    return calls, decision


class KeptProducer:
    """What the loop asks of a transactional producer, keeping the topics it produced to."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, on_delivery: Any = None, timestamp: int = 0,
                headers: Any = None) -> None:
        self.topics.append(topic)

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, *args: Any) -> None:
        pass

    def commit_transaction(self, *args: Any) -> None:
        pass


def stack(frame: FrameType | None) -> list[tuple[str, str]]:
    """The frames of processors/ from the outermost to `frame`."""
    frames: list[tuple[str, str]] = []
    while frame is not None:
        file = Path(frame.f_code.co_filename)
        if file.is_relative_to(ROOT):
            frames.append((str(file.relative_to(ROOT.parent)), frame.f_code.co_name))
        frame = frame.f_back
    return frames[::-1]


def runs_of(files: list[str]) -> list[str]:
    """The files in the order they are read, one entry per stay in a file."""
    runs: list[str] = []
    for file in files:
        if not runs or runs[-1] != file:
            runs.append(file)
    return runs


def main() -> None:
    calls, decision = walk()
    runs = runs_of([file for file, _ in calls])
    entered = Counter(runs)
    for file, function in calls:
        print(f"  {file}:{function}")
    print(f"{len(calls)} calls in {len(entered)} files; file sequence "
          f"({len(runs)} stops): {' -> '.join(Path(f).name for f in runs)}")
    print("entered more than once: " + (", ".join(f"{Path(f).name} {n}x" for f, n in
                                                  entered.most_common() if n > 1) or "none"))
    layers = runs_of([file for file, _ in decision])
    once = len(layers) == len(set(layers))
    print("path to the decision: " + " -> ".join(
        f"{Path(file).name}:{function}" for file, function in decision))
    print(f"path to the decision, by file: {' -> '.join(Path(f).name for f in layers)} "
          f"({len(layers)} files, {'each once, in order' if once else 'a file entered twice'})")


if __name__ == "__main__":
    main()
