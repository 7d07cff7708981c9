"""Live per-recipient state and live policy changes, on the real broker with real workers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.core.enrich import parse_recipient
from processors.core.policy import load_policy
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.tools.kafka_io import Output, OutputReader
from tests.e2e.conftest import Gate, decided_after, start_worker, stop_worker, wait_ready
from tests.factories import inbound, message, preference, status

pytestmark = pytest.mark.e2e

TENANT = "live-tenant"
LONG_TENANT = "long-memory"  # a tenant override with long windows, for restart tests
COOLDOWN = 4.0
WINDOW = 6.0


def test_policy_document(version: str = "test-1") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(dict(load_policy().document)))
    document["id"] = "e2e-policy"
    document["version"] = version
    document["parameters"]["marketing_cooldown_seconds"] = COOLDOWN
    document["parameters"]["service_window_seconds"] = WINDOW
    document["tenants"] = {LONG_TENANT: {"parameters": {"marketing_cooldown_seconds": 3600,
                                                        "service_window_seconds": 3600}}}
    return document


test_policy_document.__test__ = False  # type: ignore[attr-defined]


def write_policy(tmp: Path) -> dict[str, str]:
    path = tmp / "policy.json"
    path.write_text(json.dumps(test_policy_document()))
    return {"OUTBOUND_GATE_POLICY_FILE": str(path)}


def new_recipient() -> str:
    """A valid Brazilian mobile number no other test uses (as wa_id digits)."""
    while True:
        candidate = f"55119{random.randint(60_000_000, 99_999_999)}"
        if parse_recipient(candidate).region == "BR":
            return candidate


def now_rfc3339() -> str:
    return format_rfc3339(time.time())


def outbound(recipient: str, tenant: str = TENANT, **overrides: Any) -> dict[str, Any]:
    return message(message_id=f"m-{uuid.uuid4().hex[:12]}", tenant_id=tenant,
                   recipient=recipient, created_at=now_rfc3339(), **overrides)


def free_form(recipient: str, tenant: str = TENANT) -> dict[str, Any]:
    return outbound(recipient, tenant, kind="free_form", template=None)


def decision(gate: Gate, reader: OutputReader, sent: dict[str, Any],
             timeout: float = 60) -> Output:
    gate.send(gate.topics.outbound, sent["recipient"], sent)
    seen = reader.wait_for(lambda outs: any(o.value.get("message_id") == sent["message_id"]
                                            for o in outs),
                           timeout, f"a decision for {sent['message_id']}")
    return next(o for o in seen if o.value.get("message_id") == sent["message_id"])


def send_until(gate: Gate, reader: OutputReader, make: Callable[[], dict[str, Any]],
               wanted: Callable[[Output], bool], timeout: float, what: str) -> Output:
    """Send fresh messages until one is decided as wanted: state arrives asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        out = decision(gate, reader, make())
        if wanted(out):
            return out
        if gate.problem():
            pytest.fail(f"{gate.problem()} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last decision: "
                        f"{out.value.get('error_code') or 'accepted'}")


def code(out: Output) -> str | None:
    return out.value.get("error_code") if "error_code" in out.value else None


@pytest.fixture(scope="module")
def live(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("live")
    gate = start_worker(bootstrap, tmp, uuid.uuid4().hex[:10], write_policy(tmp))
    yield gate
    assert stop_worker(gate) == 0, f"worker failed on SIGTERM; log: {gate.log_path}"


def test_cooldown_after_131049_then_accepted(live: Gate) -> None:
    reader = live.reader()
    recipient = new_recipient()
    hit = now_rfc3339()
    live.send(live.topics.statuses, recipient, status(recipient, 131049, hit, TENANT))
    blocked = send_until(live, reader, lambda: outbound(recipient),
                         lambda o: code(o) == "USER_MARKETING_TEMPLATE_LIMIT", 30,
                         "USER_MARKETING_TEMPLATE_LIMIT after a 131049 status")
    assert blocked.value["meta_error_code"] == 131049
    assert blocked.value["retryable"] is True
    assert blocked.value["retry_after"] == format_rfc3339(parse_rfc3339(hit) + COOLDOWN)
    after = send_until(live, reader, lambda: outbound(recipient),
                       lambda o: o.topic == live.topics.accepted, 30,
                       "the same send to be accepted after the cool-down")
    assert parse_rfc3339(after.value["decided_at"]) >= parse_rfc3339(hit) + COOLDOWN
    reader.close()


def test_service_window_opens_and_closes(live: Gate) -> None:
    reader = live.reader()
    recipient = new_recipient()
    assert code(decision(live, reader, free_form(recipient))) == "OUTSIDE_SERVICE_WINDOW"
    opened = now_rfc3339()
    live.send(live.topics.inbound, recipient, inbound(recipient, opened, TENANT))
    send_until(live, reader, lambda: free_form(recipient),
               lambda o: o.topic == live.topics.accepted, 30,
               "a free-form send inside the window to be accepted")
    closed = send_until(live, reader, lambda: free_form(recipient),
                        lambda o: code(o) == "OUTSIDE_SERVICE_WINDOW", 30,
                        "a free-form send after the window to be rejected")
    assert parse_rfc3339(closed.value["decided_at"]) >= parse_rfc3339(opened) + WINDOW
    assert closed.value["meta_error_code"] == 131047
    reader.close()


def test_stop_then_resume_and_131050(live: Gate) -> None:
    reader = live.reader()
    recipient, other = new_recipient(), new_recipient()
    live.send(live.topics.preferences, recipient,
              preference(recipient, "stop", now_rfc3339(), TENANT))
    stopped = send_until(live, reader, lambda: outbound(recipient),
                         lambda o: code(o) == "MARKETING_OPTED_OUT", 30,
                         "MARKETING_OPTED_OUT after a stop")
    assert stopped.value["meta_error_code"] == 131050
    live.send(live.topics.preferences, recipient,
              preference(recipient, "resume", now_rfc3339(), TENANT))
    send_until(live, reader, lambda: outbound(recipient),
               lambda o: o.topic == live.topics.accepted, 30, "acceptance after a resume")
    live.send(live.topics.statuses, other, status(other, 131050, now_rfc3339(), TENANT))
    send_until(live, reader, lambda: outbound(other),
               lambda o: code(o) == "MARKETING_OPTED_OUT", 30,
               "MARKETING_OPTED_OUT after a 131050 status")
    reader.close()


def test_policy_published_mid_stream(live: Gate) -> None:
    reader = live.reader()
    us = "12025550143"
    before = decision(live, reader, outbound(us))
    assert code(before) == "MARKETING_PAUSED_US"
    assert before.value["policy"] == {"id": "e2e-policy", "version": "test-1", "monitored": []}

    monitored = test_policy_document(version="test-2-monitor")
    monitored["rules"]["MARKETING_PAUSED_US"]["mode"] = "monitor"
    path = live.log_path.parent / "policy-2.json"
    path.write_text(json.dumps(monitored))
    published = time.time()
    result = subprocess.run([sys.executable, "-m", "processors.cli.main", "policy", "publish",
                             str(path)], env=live.env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    after = send_until(live, reader, lambda: outbound(us),
                       lambda o: o.value["policy"]["version"] == "test-2-monitor", 30,
                       "decisions under the published policy version")
    assert after.topic == live.topics.accepted
    assert after.value["policy"]["monitored"] == ["MARKETING_PAUSED_US"]
    print(f"\npolicy propagation: published -> first decision under it in "
          f"{parse_rfc3339(after.value['decided_at']) - published:.3f} s")
    backup = live.log_path.parent / "policy-backup.json"
    exported = policy_cli(live, "export", str(backup))
    assert exported.returncode == 0, exported.stderr
    assert backup.read_bytes() == path.read_bytes()

    # An invalid document on the topic is refused and the policy in force stays.
    live.send_raw(live.topics.policy, b"e2e-policy", b'{"id": "e2e-policy", "version": "bad"}')
    deadline = time.monotonic() + 30
    while "refused" not in live.log():
        assert time.monotonic() < deadline, "the worker never logged the refused policy"
        time.sleep(0.2)  # pacing of a log poll with a deadline
    assert decision(live, reader, outbound(us)).value["policy"]["version"] == "test-2-monitor"
    # The export gives what the workers hold, and says a newer record was refused.
    exported = policy_cli(live, "export", "-")
    assert exported.returncode == 0 and json.loads(exported.stdout) == monitored
    assert "1 newer record(s)" in exported.stderr
    # Rolling back is publishing the previous document again.
    first = live.log_path.parent / "policy-1.json"
    first.write_text(json.dumps(test_policy_document(version="test-1")))
    assert policy_cli(live, "publish", str(first)).returncode == 0
    send_until(live, reader, lambda: outbound(us),
               lambda o: o.value["policy"]["version"] == "test-1", 30,
               "decisions under the policy rolled back to")
    reader.close()


def policy_cli(gate: Gate, action: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processors.cli.main", "policy", action, path],
                          env=gate.env, capture_output=True, text=True, timeout=60)


def establish(gate: Gate, reader: OutputReader, tenant: str) -> dict[str, str]:
    """Opt-out, cool-down and open window for three recipients of tenant; returns them."""
    who = {"stopped": new_recipient(), "limited": new_recipient(), "writing": new_recipient()}
    gate.send(gate.topics.preferences, who["stopped"],
              preference(who["stopped"], "stop", now_rfc3339(), tenant))
    gate.send(gate.topics.statuses, who["limited"],
              status(who["limited"], 131049, now_rfc3339(), tenant))
    gate.send(gate.topics.inbound, who["writing"], inbound(who["writing"], now_rfc3339(), tenant))
    send_until(gate, reader, lambda: outbound(who["stopped"], tenant),
               lambda o: code(o) == "MARKETING_OPTED_OUT", 30, "the opt-out")
    send_until(gate, reader, lambda: outbound(who["limited"], tenant),
               lambda o: code(o) == "USER_MARKETING_TEMPLATE_LIMIT", 30, "the cool-down")
    send_until(gate, reader, lambda: free_form(who["writing"], tenant),
               lambda o: o.topic == gate.topics.accepted, 30, "the open window")
    return who


def assert_state_kept(gate: Gate, reader: OutputReader, who: dict[str, str], tenant: str) -> None:
    # The first decision after the restart must already see the state: no polling here.
    assert code(decision(gate, reader, outbound(who["stopped"], tenant))) == \
        "MARKETING_OPTED_OUT"
    assert code(decision(gate, reader, outbound(who["limited"], tenant))) == \
        "USER_MARKETING_TEMPLATE_LIMIT"
    assert decision(gate, reader, free_form(who["writing"], tenant)).topic == \
        gate.topics.accepted


def test_state_survives_sigkill(bootstrap: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    env = write_policy(tmp_path)
    gate = start_worker(bootstrap, tmp_path, run_id, env)
    reader = gate.reader()
    who = establish(gate, reader, LONG_TENANT)
    os.kill(gate.process.pid, signal.SIGKILL)
    gate.process.wait(timeout=30)
    restarted_at = time.monotonic()
    gate = start_worker(bootstrap, tmp_path, run_id, env)
    print(f"\nready again {time.monotonic() - restarted_at:.2f} s after a SIGKILL restart")
    assert_state_kept(gate, reader, who, LONG_TENANT)
    reader.close()
    assert stop_worker(gate) == 0


def test_two_workers_one_stopped_mid_stream(bootstrap: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    env = write_policy(tmp_path)
    first = start_worker(bootstrap, tmp_path, run_id, env, name="first")
    reader = first.reader()
    stopped = [new_recipient() for _ in range(16)]
    for recipient in stopped:
        first.send(first.topics.preferences, recipient,
                   preference(recipient, "stop", now_rfc3339(), LONG_TENANT))
    for recipient in stopped:
        send_until(first, reader, lambda r=recipient: outbound(r, LONG_TENANT),  # type: ignore[misc]
                   lambda o: code(o) == "MARKETING_OPTED_OUT", 60, "every opt-out")
    second = start_worker(bootstrap, tmp_path, run_id, env, name="second")
    wait_ready(first)

    sent: list[str] = []
    batch: list[dict[str, Any]] = []

    def stream(count: int) -> None:
        for index in range(count):
            doc = outbound(stopped[index % len(stopped)], LONG_TENANT)
            batch.append(doc)
            sent.append(doc["message_id"])

    def flush() -> None:
        from processors.tools.kafka_io import producer, send_json

        out = producer(first.bootstrap)
        for doc in batch:
            send_json(out, first.topics.outbound, doc["recipient"], doc)
        out.flush()
        out.close()
        batch.clear()

    def decided() -> Counter[str]:
        wanted = set(sent)
        return Counter(str(o.value["message_id"]) for o in reader.seen
                       if o.value.get("message_id") in wanted)

    stream(150)
    flush()
    reader.wait_for(lambda _: len(decided()) >= 50, 60, "the first decisions of the stream")
    assert stop_worker(first) == 0, f"first worker failed on SIGTERM; log: {first.log_path}"
    stream(150)
    flush()
    reader.wait_for(lambda _: len(decided()) == len(sent), 120,
                    f"a decision for each of the {len(sent)} messages from the second worker")
    # A sentinel through every partition: duplicates of earlier records would come before it.
    decided_after(second, reader, [outbound(r, LONG_TENANT) for r in stopped], 60)
    counts = decided()
    assert set(counts) == set(sent)
    duplicated = [m for m, n in counts.items() if n > 1]
    copies = [(o.topic, o.timestamp_ms, o.value.get("decided_at")) for o in reader.seen
              if duplicated and o.value.get("message_id") == duplicated[0]]
    assert not duplicated, f"{len(duplicated)} duplicated decisions, e.g. {copies}; " \
        f"logs: {first.log_path}, {second.log_path}"
    codes = Counter(o.value.get("error_code") for o in reader.seen
                    if o.value.get("message_id") in counts)
    assert codes == Counter({"MARKETING_OPTED_OUT": len(sent)}), codes
    reader.close()
    assert stop_worker(second) == 0


def state_entries(gate: Gate) -> float | None:
    """Sum of outbound_gate_recipient_state_entries over partitions; None before a sweep."""
    import urllib.request

    with urllib.request.urlopen(f"{gate.base_url}/metrics", timeout=5) as response:
        lines = [line for line in response.read().decode().splitlines()
                 if line.startswith("outbound_gate_recipient_state_entries{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines) if lines else None


def test_expired_state_is_swept(bootstrap: str, tmp_path: Path) -> None:
    env = {**write_policy(tmp_path), "OUTBOUND_GATE_STATE_SWEEP_SECONDS": "2",
           "OUTBOUND_GATE_DEDUP_SECONDS": "5"}
    gate = start_worker(bootstrap, tmp_path, uuid.uuid4().hex[:10], env)
    reader = gate.reader()
    recipients = [new_recipient() for _ in range(12)]
    for recipient in recipients:
        gate.send(gate.topics.inbound, recipient, inbound(recipient, now_rfc3339(), TENANT))
    send_until(gate, reader, lambda: free_form(recipients[-1]),
               lambda o: o.topic == gate.topics.accepted, 30, "the inbound messages applied")
    deadline = time.monotonic() + 30
    while not (state_entries(gate) or 0) >= len(recipients):
        assert time.monotonic() < deadline, "a sweep never counted the recipients' state"
        time.sleep(0.5)  # pacing of a metrics poll with a deadline
    # The window (6 s) and the de-duplication memory (5 s) pass: the sweeps delete every key.
    deadline = time.monotonic() + 60
    while state_entries(gate) != 0:
        assert time.monotonic() < deadline, f"state never expired: {state_entries(gate)} keys"
        time.sleep(0.5)  # pacing of a metrics poll with a deadline
    assert "state_sweep" in gate.log()
    reader.close()
    assert stop_worker(gate) == 0
