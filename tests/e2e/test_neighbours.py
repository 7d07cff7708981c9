"""The gate's neighbours on the real broker: the producer helper and the dead-letter re-drive."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from processors.client import InvalidMessage, InvalidRecipient, OutboundProducer
from processors.timeutil import format_rfc3339
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
