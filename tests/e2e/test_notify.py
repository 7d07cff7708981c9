"""The notifier against a real broker and a real webhook receiver on 127.0.0.1, SIGKILLed
mid-run and restarted: every rejection is delivered once or dead-lettered once, none twice."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.runtime.topics import create_missing
from processors.settings import from_env
from processors.tools.kafka_io import producer, read_to_end, send_json
from tests.e2e.conftest import STARTED, poll

pytestmark = pytest.mark.e2e

NUMBER = "+14165550123"
# Scenario -> how many rejections of it. The receiver answers by scenario (the message id's
# prefix): ok 200; bad 400; flaky 500 then 200; busy 429 with Retry-After: 1 then 200; slow
# hangs past the notifier's timeout then 200; kill answers 200 and then SIGKILLs the notifier.
SCENARIOS = {"ok": 12, "bad": 4, "flaky": 4, "busy": 3, "slow": 2}
HANG_SECONDS = 3.0
TIMEOUT_SECONDS = 1.0


@dataclass
class Seen:
    posts: int = 0
    processed: int = 0  # 2xx answers the receiver acted on (it de-duplicates by key)
    duplicates: int = 0  # POSTs of a key it had acted on already, answered 200
    first_ok_at: float | None = None
    busy_at: float | None = None
    retried_after: float | None = None


@dataclass
class Receiver:
    keys: dict[str, Seen] = field(default_factory=dict)
    message_of: dict[str, str] = field(default_factory=dict)
    victim: subprocess.Popen[bytes] | None = None
    killed_at: float | None = None
    mismatched_headers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bool]:
        """(status, headers, acted on) for one POST; counts it."""
        message_id = body["items"][0]["message_id"]
        scenario = message_id.split("-")[0]
        with self.lock:
            self.message_of[key] = message_id
            seen = self.keys.setdefault(key, Seen())
            seen.posts += 1
            first = seen.posts == 1
            if seen.processed:
                seen.duplicates += 1
                return 200, {}, False
            if scenario == "bad":
                return 400, {}, False
            if first and scenario == "flaky":
                return 500, {}, False
            if first and scenario == "busy":
                seen.busy_at = time.monotonic()
                return 429, {"Retry-After": "1"}, False
            if scenario == "busy" and seen.busy_at is not None:
                seen.retried_after = time.monotonic() - seen.busy_at
            if first and scenario == "slow":
                return -1, {}, False  # hang
            seen.processed += 1
            seen.first_ok_at = time.monotonic()
            return 200, {}, True


def handler_of(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = self.headers.get("Idempotency-Key", "")
            if key != body.get("idempotency_key"):
                receiver.mismatched_headers += 1
            status, headers, _ = receiver.answer(key, body)
            if status == -1:
                # Past the notifier's timeout; it has given up on this POST and will retry.
                # This thread only idles for the receiver's part.
                time.sleep(HANG_SECONDS)
                status = 200
            answer = b'{"error": "unknown ticket"}' if status == 400 else b"{}"
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.wfile.flush()
            except OSError:
                return  # the notifier stopped waiting
            victim = receiver.victim
            if body["items"][0]["message_id"].startswith("kill-") and victim is not None \
                    and receiver.killed_at is None:
                # Right after a 200 the notifier has not committed its settlement yet: the
                # worst moment to die.
                receiver.killed_at = time.monotonic()
                victim.send_signal(signal.SIGKILL)

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_of(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks/gate"
    server.shutdown()
    server.server_close()


def rejection(message_id: str) -> dict[str, Any]:
    return {"schema_version": 1, "message_id": message_id, "tenant_id": "acme",
            "decision": "rejected", "error_code": "MARKETING_PAUSED_US",
            "reason": "Meta does not deliver marketing templates to US phone numbers",
            "retryable": False, "retry_after": None,
            "message": {"message_id": message_id, "recipient": NUMBER,
                        "context": {"ticket_id": f"T-{message_id}", "agent_id": "a1"}}}


def start_notifier(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "processors.cli.main", "notify", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    STARTED.append(process)
    return process


def test_every_rejection_is_delivered_or_dead_lettered_once_through_a_sigkill(
        bootstrap: str, receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    state, url = receiver
    run = uuid.uuid4().hex[:10]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "OUTBOUND_GATE_TOPIC_REJECTED": f"outbound.messages.rejected.{run}",
           "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_DLQ": f"outbound.notifications.dlq.{run}",
           "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_SETTLED": f"outbound.notifications.settled.{run}",
           "OUTBOUND_GATE_PARTITIONS": "2"}
    settings = from_env(env)
    topics = settings.topics
    create_missing(bootstrap, [topics.rejected], 1, security=settings.security)
    ids = [f"{scenario}-{n}" for scenario, count in SCENARIOS.items() for n in range(count)]
    # One partition, so that the kill comes after half the rejections and before the rest.
    ids = [*ids[::2], "kill-0", *ids[1::2]]
    out = producer(bootstrap, settings.security)
    for message_id in ids:
        send_json(out, topics.rejected, f"acme:{NUMBER}", rejection(message_id))
    out.flush()
    out.close()

    flags = ["--webhook", url, "--group", f"notifier-{run}", "--timeout", str(TIMEOUT_SECONDS),
             "--backoff", "0.05", "--max-backoff", "0.5"]
    log = tmp_path / "notify.log"
    first = start_notifier(env, log, *flags)
    state.victim = first
    poll(lambda: first.poll() is not None, 120, "the receiver to SIGKILL the notifier after "
         "its 200 for kill-0")
    assert first.returncode == -signal.SIGKILL, log.read_text()
    settled_before_kill = sum(seen.processed for seen in state.keys.values())
    assert 0 < settled_before_kill < len(ids) - SCENARIOS["bad"]

    def dead_letters() -> list[dict[str, Any]]:
        return [orjson.loads(value) for _, value in read_to_end(settings, topics.notifications_dlq)
                if value is not None]

    def settled() -> int:
        processed = sum(1 for seen in state.keys.values() if seen.processed)
        return processed + len(dead_letters())

    second = start_notifier(env, log, *flags)
    poll(lambda: settled() >= len(ids), 180,
         f"{len(ids)} rejections delivered or dead-lettered after the restart",
         lambda: f"the notifier exited with {second.returncode}; log: {log}"
         if second.poll() is not None else None)
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=60) == 0, log.read_text()

    # Once more from the start of the topic in a new group: the settled topic, not the
    # offsets or memory, says that everything was told already.
    third = subprocess.run(
        [sys.executable, "-m", "processors.cli.main", "notify", *flags[:2], "--group",
         f"replay-{run}", "--once"], env=env, capture_output=True, text=True, timeout=180)
    assert third.returncode == 0, third.stderr
    assert f"0 delivered, 0 dead-lettered, {len(ids)} already settled" in third.stderr

    letters = dead_letters()
    by_message = {state.message_of[key]: seen for key, seen in state.keys.items()}
    lettered = [letter["notification"]["items"][0]["message_id"] for letter in letters]
    assert sorted(lettered) == sorted(i for i in ids if i.startswith("bad-")), lettered
    for letter in letters:
        assert letter["reason"] == "refused"
        assert letter["answer"] == {"status": 400, "body": '{"error": "unknown ticket"}',
                                    "error": None}
        assert letter["attempts"] == 1
    for message_id in ids:
        seen = by_message[message_id]
        assert seen.processed == (0 if message_id.startswith("bad-") else 1), message_id
    assert by_message["busy-0"].retried_after is not None
    assert all(by_message[f"busy-{n}"].retried_after >= 1.0  # type: ignore[operator]
               for n in range(SCENARIOS["busy"]))  # Retry-After honoured
    assert all(by_message[f"slow-{n}"].posts >= 2 for n in range(SCENARIOS["slow"]))
    assert state.mismatched_headers == 0
    # The POSTs the kill repeated: only what was delivered in the moments before it (not yet
    # committed), each with its idempotency key, which the receiver acted on once.
    assert state.killed_at is not None
    repeated = {m: s for m, s in by_message.items() if s.duplicates}
    assert "kill-0" in repeated or by_message["kill-0"].posts == 1
    for message_id, seen in repeated.items():
        assert seen.first_ok_at is not None
        assert state.killed_at - seen.first_ok_at < 2.0, (message_id, repeated)
    # The dead-letter tools read the notifier's letters too, and list them as JSON.
    listed = subprocess.run(
        [sys.executable, "-m", "processors.cli.main", "dlq", "list", "--json"],
        env={**env, "OUTBOUND_GATE_TOPIC_DLQ": topics.notifications_dlq},
        capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(row["reason"] for row in rows) == ["refused"] * SCENARIOS["bad"]
    assert {row["topic"] for row in rows} == {topics.rejected}
    text = log.read_text() + third.stderr
    assert NUMBER not in text and NUMBER[1:] not in text
    print(f"\nnotifier: {len(ids)} rejections, {settled_before_kill} delivered before the "
          f"SIGKILL, POSTs repeated after it: {sorted(repeated)}, "
          f"{len(letters)} dead letters")
