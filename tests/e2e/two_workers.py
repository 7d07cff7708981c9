"""Two workers of one group, each owning half the partitions, and a stream through a SIGKILL of
one of them: the set-up and the exactly-once checks the cross-worker identity tests share."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processors.core.policy import load_policy
from processors.tools.kafka_io import OutputReader, producer, send_json
from tests.e2e.conftest import Gate, decided_after, poll, start_worker, stop_worker, wait_ready
from tests.e2e.test_live_state import code

PARTITIONS = 4  # start_worker's; two workers split them 0-1 and 2-3 (range assignor)


def owned(gate: Gate) -> set[int]:
    """The partitions of the worker's latest assignment, from its JSON log lines."""
    latest: set[int] = set()
    for line in gate.log().splitlines():
        if '"route_assignment"' in line:
            entry = json.loads(line)
            if entry.get("event") == "route_assignment":
                latest = set(entry["partitions"])
    return latest


def policy_env(tmp: Path) -> dict[str, str]:
    # The streams send ~100 messages to one user within seconds; the pair budget is not what
    # these tests are about.
    document: dict[str, Any] = json.loads(json.dumps(dict(load_policy().document)))
    document["parameters"]["pair_rate_burst"] = 10_000
    path = tmp / "policy.json"
    path.write_text(json.dumps(document))
    return {"OUTBOUND_GATE_POLICY_FILE": str(path)}


def start_two(bootstrap: str, tmp: Path, run_id: str) -> tuple[Gate, Gate]:
    """Two workers ("first", "second") of one group, ready, each holding two partitions."""
    env = policy_env(tmp)
    first = start_worker(bootstrap, tmp, run_id, env, name="first")
    second = start_worker(bootstrap, tmp, run_id, env, name="second")
    wait_ready(first)
    poll(lambda: len(owned(first)) == 2 and len(owned(second)) == 2
         and not owned(first) & owned(second), 90,
         "the two workers to hold two partitions each", first.problem)
    return first, second


def stream_through_sigkill(first: Gate, second: Gate, reader: OutputReader, victim: Gate,
                           message: Callable[[int], tuple[dict[str, Any], str | None]],
                           sentinels: Callable[[], list[dict[str, Any]]]) -> None:
    """120 messages (message(index) -> document, expected error code or None) sent to first's
    outbound topic; victim is SIGKILLed after the first decisions. Every message is decided
    once and as expected; the survivor then stops cleanly."""
    survivor = second if victim is first else first
    sent: dict[str, str | None] = {}
    out = producer(first.bootstrap)

    def stream(start: int, count: int) -> None:
        for index in range(start, start + count):
            doc, expected = message(index)
            sent[doc["message_id"]] = expected
            send_json(out, first.topics.outbound, doc["recipient"], doc)
        out.flush()

    def decided() -> Counter[str]:
        return Counter(str(o.value["message_id"]) for o in reader.seen
                       if o.value.get("message_id") in sent)

    stream(0, 60)
    reader.wait_for(lambda _: len(decided()) >= 10, 60, "the first decisions of the stream")
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(timeout=30)
    stream(60, 60)
    reader.wait_for(lambda _: len(decided()) == len(sent), 180,
                    f"a decision for each of the {len(sent)} messages after the SIGKILL")
    # A sentinel to each identity: a duplicate of an earlier decision would come before it.
    decided_after(survivor, reader, sentinels(), 120)
    counts = decided()
    assert [m for m, n in counts.items() if n > 1] == [], "duplicated decisions"
    got = {str(o.value["message_id"]): code(o) for o in reader.seen
           if o.value.get("message_id") in sent}
    wrong = {m: (sent[m], got[m]) for m in sent if got.get(m) != sent[m]}
    assert not wrong, f"{len(wrong)} wrong decisions (expected, got), e.g. " \
        f"{list(wrong.items())[:5]}; logs: {first.log_path}, {second.log_path}"
    out.close()
    assert stop_worker(survivor) == 0, f"worker failed on SIGTERM; log: {survivor.log_path}"
