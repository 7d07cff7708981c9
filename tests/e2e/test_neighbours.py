"""The gate's neighbours on the real broker: the producer helper and the dead-letter re-drive."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from processors.core.timeutil import format_rfc3339
from processors.tools.client import InvalidMessage, InvalidRecipient, OutboundProducer
from tests.e2e.conftest import Gate, start_worker, stop_worker
from tests.factories import message

pytestmark = pytest.mark.e2e


def fresh(**overrides: Any) -> dict[str, Any]:
    return message(message_id=f"n-{uuid.uuid4().hex[:12]}", tenant_id="helper",
                   created_at=format_rfc3339(time.time()), **overrides)


def test_producer_helper_validates_normalises_and_keys(gate: Gate) -> None:
    reader = gate.reader()
    with OutboundProducer(gate.bootstrap, topic=gate.topics.outbound) as client:
        sent = fresh(recipient="(416) 555-0123", recipient_region="CA")
        partition, offset = client.send(sent)
        assert partition >= 0 and offset >= 0
        with pytest.raises(InvalidMessage, match="kind"):
            client.send(fresh(kind="carrier-pigeon"))
        with pytest.raises(InvalidRecipient):
            client.send(fresh(recipient="+1202555"))
    seen = reader.wait_for(lambda outs: any(o.value.get("message_id") == sent["message_id"]
                                            for o in outs), 60, "the helper's message decided")
    out = next(o for o in seen if o.value.get("message_id") == sent["message_id"])
    assert out.key == "helper:+14165550123"
    assert out.topic == gate.topics.accepted
    reader.close()


def cli(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processors.cli.main", "dlq", *args],
                          env=gate.env, capture_output=True, text=True, timeout=120)


def test_dead_letter_replayed_once_after_a_fix(bootstrap: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    small = start_worker(bootstrap, tmp_path, run_id, {"OUTBOUND_GATE_MAX_MESSAGE_BYTES": "600"})
    reader = small.reader()
    big = fresh(recipient="+14165550123", context={"note": "x" * 800})
    small.send(small.topics.outbound, big["recipient"], big)
    reader.wait_for(lambda outs: any(o.topic == small.topics.dlq for o in outs), 60,
                    "the oversized message in the dead-letter topic")
    assert stop_worker(small) == 0

    listed = cli(small, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if "too_large" in row)
    where = line.split("\t")[0]
    shown = cli(small, "show", where)
    assert big["message_id"] in shown.stdout

    # The fix: a worker that takes larger messages. Then the re-drive.
    fixed = start_worker(bootstrap, tmp_path, run_id, {"OUTBOUND_GATE_MAX_MESSAGE_BYTES": "4096"})
    first = cli(fixed, "replay", where)
    assert first.returncode == 0, first.stderr
    assert "1 replayed" in first.stderr
    reader.wait_for(lambda outs: any(o.value.get("message_id") == big["message_id"]
                                     for o in outs), 60, "the replayed message decided")
    second = cli(fixed, "replay", where)
    assert second.returncode == 0 and "0 replayed, 1 already replayed" in second.stderr
    # A sentinel after the second replay: a duplicate would be decided before it.
    sentinel = fresh(recipient="+14165550123")
    fixed.send(fixed.topics.outbound, "helper:+14165550123", sentinel)
    reader.wait_for(lambda outs: any(o.value.get("message_id") == sentinel["message_id"]
                                     for o in outs), 60, "the sentinel")
    decisions = [o for o in reader.seen if o.value.get("message_id") == big["message_id"]]
    assert len(decisions) == 1 and decisions[0].topic == fixed.topics.accepted
    missing = cli(fixed, "replay", "0:999999")
    assert missing.returncode == 1 and "no dead letter" in missing.stderr
    reader.close()
    assert stop_worker(fixed) == 0


class Receiver:
    """A local webhook: the first POST fails with 500, the rest are kept."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.attempts == 1:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def close(self) -> None:
        self.server.shutdown()


def test_notifier_groups_deduplicates_and_retries(gate: Gate) -> None:
    reader = gate.reader()
    sent = [fresh(recipient="+12025550143", context={"ticket_id": "T-9", "agent_id": "a1"}),
            fresh(recipient="+12025550178", context={"ticket_id": "T-9"}),
            fresh(recipient="+12025550143", context={"campaign_id": "spring"})]
    for doc in sent:
        gate.send(gate.topics.outbound, doc["recipient"], doc)
    ids = {doc["message_id"] for doc in sent}
    reader.wait_for(lambda outs: ids <= {o.value.get("message_id") for o in outs}, 60,
                    "three rejections")
    first = next(o for o in reader.seen if o.value.get("message_id") in ids)
    gate.send(gate.topics.rejected, first.key, first.value)  # told twice
    receiver = Receiver()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "processors.cli.main", "notify", "--webhook", receiver.url,
             "--once", "--group", f"notifier-{uuid.uuid4().hex[:8]}", "--backoff", "0.05"],
            env=gate.env, capture_output=True, text=True, timeout=120)
    finally:
        receiver.close()
    assert result.returncode == 0, result.stderr
    assert receiver.attempts == len(receiver.bodies) + 1  # one failure, then retried
    ours = [b for b in receiver.bodies if ids & {i["message_id"] for i in b["items"]}]
    # One notification a rejection, named by its group (the receiver groups by ticket or
    # campaign) and keyed for the receiver's de-duplication.
    assert all(len(b["items"]) == 1 and b["idempotency_key"] for b in ours)
    ticket = [b for b in ours if b.get("ticket_id") == "T-9"]
    assert sorted(b["items"][0]["message_id"] for b in ticket) == sorted(
        d["message_id"] for d in sent[:2])
    assert all(b["items"][0]["reason"] and b["items"][0]["next_step"] for b in ticket)
    assert all(b["items"][0]["retry"] == "Do not retry this message." for b in ticket)
    campaign = [b for b in ours if b.get("campaign_id") == "spring"]
    assert [b["items"][0]["message_id"] for b in campaign] == [sent[2]["message_id"]]
    told = [i["message_id"] for b in ours for i in b["items"]]
    assert len(told) == len(set(told)) == 3  # the rejection told twice is notified once
    reader.close()
