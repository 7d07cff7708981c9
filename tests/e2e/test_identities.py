"""A user known by a phone number and a BSUID, with the two on partitions of different workers:
state reported for either identity applies to sends to the other, through a worker's SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from processors.core.enrich import parse_recipient
from processors.core.policy import load_policy
from processors.runtime.engine.partitioner import partition_for
from processors.tools.kafka_io import producer, send_json
from tests.e2e.conftest import Gate, poll, start_worker, stop_worker, wait_ready
from tests.e2e.test_live_state import code, free_form, now_rfc3339, outbound, send_until
from tests.factories import inbound, preference

pytestmark = pytest.mark.e2e

TENANT = "identities"
PARTITIONS = 4  # start_worker's; two workers split them 0-1 and 2-3 (range assignor)


def user_on_two_halves() -> tuple[str, str]:
    """A number (wa_id digits) and a BSUID whose partitions fall in different halves, so two
    workers of one group own them: one holds partitions 0-1, the other 2-3."""
    rng = random.Random()
    while True:
        number = f"55119{rng.randint(60_000_000, 99_999_999)}"
        e164 = parse_recipient(number).e164
        if e164 is None:
            continue
        bsuid = f"BR.{rng.randint(10**15, 10**16)}"
        half = partition_for(f"{TENANT}:{e164}", PARTITIONS) // 2
        if partition_for(f"{TENANT}:{bsuid}", PARTITIONS) // 2 != half:
            return number, bsuid


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
    # The stream below sends ~100 messages to one user within seconds; the pair budget is
    # not what this test is about.
    document: dict[str, Any] = json.loads(json.dumps(dict(load_policy().document)))
    document["parameters"]["pair_rate_burst"] = 10_000
    path = tmp / "policy.json"
    path.write_text(json.dumps(document))
    return {"OUTBOUND_GATE_POLICY_FILE": str(path)}


def test_linked_identities_across_workers_through_a_sigkill(bootstrap: str,
                                                          tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    env = policy_env(tmp_path)
    first = start_worker(bootstrap, tmp_path, run_id, env, name="first")
    second = start_worker(bootstrap, tmp_path, run_id, env, name="second")
    wait_ready(first)
    poll(lambda: len(owned(first)) == 2 and len(owned(second)) == 2
         and not owned(first) & owned(second), 90,
         "the two workers to hold two partitions each", first.problem)
    number, bsuid = user_on_two_halves()
    e164 = parse_recipient(number).e164
    assert e164 is not None
    number_partition = partition_for(f"{TENANT}:{e164}", PARTITIONS)
    bsuid_partition = partition_for(f"{TENANT}:{bsuid}", PARTITIONS)
    assert (number_partition in owned(first)) != (bsuid_partition in owned(first)), \
        "the number and the BSUID should be on different workers"
    reader = first.reader()

    # The opt-out is reported for the BSUID alone (a user with a username, no number).
    first.send(first.topics.preferences, bsuid,
               preference(bsuid, "stop", now_rfc3339(), TENANT))
    # Then the user writes from the number, and Meta's webhook names both: a link.
    first.send(first.topics.inbound, number,
               {**inbound(number, now_rfc3339(), TENANT), "user_id": bsuid})
    blocked = send_until(first, reader, lambda: outbound(number, TENANT),
                         lambda o: code(o) == "MARKETING_OPTED_OUT", 90,
                         "marketing to the number refused for the BSUID's opt-out")
    assert blocked.value["enrichment"]["recipient_kind"] == "phone"
    window = send_until(first, reader, lambda: free_form(bsuid, TENANT),
                        lambda o: code(o) is None, 60,
                        "free-form to the BSUID accepted in the window the number opened")
    assert window.value["enrichment"]["recipient_kind"] == "bsuid"
    assert window.value["enrichment"]["recipient_e164"] == e164

    # A stream to both identities; the worker owning the number's partition dies mid-stream.
    victim = first if number_partition in owned(first) else second
    survivor = second if victim is first else first
    sent: dict[str, str | None] = {}
    out = producer(bootstrap)

    def stream(count: int) -> None:
        for index in range(count):
            doc = outbound(number, TENANT) if index % 2 else free_form(bsuid, TENANT)
            sent[doc["message_id"]] = "MARKETING_OPTED_OUT" if index % 2 else None
            send_json(out, first.topics.outbound, doc["recipient"], doc)
        out.flush()

    def decided() -> Counter[str]:
        return Counter(str(o.value["message_id"]) for o in reader.seen
                       if o.value.get("message_id") in sent)

    stream(60)
    reader.wait_for(lambda _: len(decided()) >= 10, 60, "the first decisions of the stream")
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(timeout=30)
    stream(60)
    reader.wait_for(lambda _: len(decided()) == len(sent), 180,
                    f"a decision for each of the {len(sent)} messages after the SIGKILL")
    # A sentinel to each identity: a duplicate of an earlier decision would come before it.
    sentinels = [outbound(number, TENANT), free_form(bsuid, TENANT)]
    for doc in sentinels:
        survivor.send(survivor.topics.outbound, doc["recipient"], doc)
    ids = {doc["message_id"] for doc in sentinels}
    reader.wait_for(lambda outs: ids <= {o.value.get("message_id") for o in outs}, 120,
                    "the sentinels")
    counts = decided()
    assert [m for m, n in counts.items() if n > 1] == [], "duplicated decisions"
    got = {str(o.value["message_id"]): code(o) for o in reader.seen
           if o.value.get("message_id") in sent}
    wrong = {m: (sent[m], got[m]) for m in sent if got.get(m) != sent[m]}
    assert not wrong, f"{len(wrong)} wrong decisions (expected, got), e.g. " \
        f"{list(wrong.items())[:5]}; logs: {first.log_path}, {second.log_path}"
    out.close()
    reader.close()
    assert stop_worker(survivor) == 0, f"worker failed on SIGTERM; log: {survivor.log_path}"
