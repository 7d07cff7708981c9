"""A user who changes number (Meta's user_changed_number) is still the same user, live: the old
and the new number on different partitions (and, with two workers, on different workers), an
opt-out and an open window reported for the old number apply to sends to the new one, through
the stream, the check API (POST /v1/check) and a worker's SIGKILL. Real workers and broker."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from processors.core.enrich import parse_recipient
from processors.core.timeutil import parse_rfc3339
from processors.runtime.engine.partitioner import partition_for
from processors.tools.kafka_io import producer
from tests.e2e.conftest import Gate, poll, start_worker, stop_worker
from tests.e2e.test_check_api import TOKEN, check
from tests.e2e.test_live_state import code, free_form, now_rfc3339, outbound, send_until
from tests.e2e.two_workers import (
    PARTITIONS,
    owned,
    policy_env,
    start_two,
    stream_through_sigkill,
)
from tests.factories import inbound, preference, template_entry

pytestmark = pytest.mark.e2e

TENANT = "numbers"


def e164(number: str) -> str:
    parsed = parse_recipient(number).e164
    assert parsed is not None
    return parsed


def numbers_on_two_halves() -> tuple[str, str]:
    """An old and a new number (wa_id digits) whose partitions fall in different halves: with
    two workers (partitions 0-1 and 2-3) they are on different workers."""
    rng = random.Random()
    while True:
        old, new = (f"55119{rng.randint(60_000_000, 99_999_999)}" for _ in range(2))
        if parse_recipient(old).e164 is None or parse_recipient(new).e164 is None:
            continue
        if partition_for(f"{TENANT}:{e164(old)}", PARTITIONS) // 2 != \
                partition_for(f"{TENANT}:{e164(new)}", PARTITIONS) // 2:
            return old, new


def changed_number(old: str, new: str) -> dict[str, Any]:
    """Meta's body of a user_changed_number system message (the webhooks topic)."""
    message = {"from": old, "id": f"wamid.{uuid.uuid4().hex}",
               "timestamp": str(int(parse_rfc3339(now_rfc3339()))), "type": "system",
               "system": {"body": f"User changed from {old} to {new}", "wa_id": new,
                          "type": "user_changed_number"}}
    return {"object": "whatsapp_business_account", "entry": [{"id": "waba-e2e", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
                                        "messages": [message]}}]}]}


def opted_out_then_changed(gate: Gate, old: str, new: str) -> None:
    """The user opts out and writes from the old number, then changes to the new one."""
    gate.send(gate.topics.preferences, old, preference(old, "stop", now_rfc3339(), TENANT))
    gate.send(gate.topics.inbound, old, inbound(old, now_rfc3339(), TENANT))
    send_webhook(gate, changed_number(old, new))


def send_webhook(gate: Gate, body: dict[str, Any]) -> None:
    out = producer(gate.bootstrap, gate.security)
    out.send(gate.topics.webhooks, value=json.dumps(body).encode(),
             headers=[("tenant_id", TENANT.encode())])
    out.flush()
    out.close()


def test_a_changed_number_on_one_worker_and_the_check_api(bootstrap: str,
                                                          tmp_path: Path) -> None:
    gate = start_worker(bootstrap, tmp_path, uuid.uuid4().hex[:10],
                        {**policy_env(tmp_path), "OUTBOUND_GATE_API_TOKEN": TOKEN})
    key = f"{TENANT}:promo:en_US"
    gate.send(gate.topics.templates, key, template_entry("promo", "MARKETING",
                                                         tenant_id=TENANT))
    poll(lambda: gate.catalog_entry(key) is not None, 60, "the tenant's template",
         gate.problem)
    old, new = numbers_on_two_halves()
    reader = gate.reader()
    opted_out_then_changed(gate, old, new)
    blocked = send_until(gate, reader, lambda: outbound(new, TENANT),
                         lambda o: code(o) == "MARKETING_OPTED_OUT", 90,
                         "marketing to the new number refused for the old number's opt-out")
    assert blocked.value["enrichment"]["recipient_kind"] == "phone"
    window = send_until(gate, reader, lambda: free_form(new, TENANT),
                        lambda o: code(o) is None, 60,
                        "free-form to the new number in the window the old number opened")
    assert window.value["enrichment"]["recipient_e164"] == e164(new)
    to_old = send_until(gate, reader, lambda: outbound(old, TENANT),
                        lambda o: code(o) is not None, 30, "a decision for the old number")
    assert code(to_old) == "MARKETING_OPTED_OUT"
    # The check API answers as the stream decides, for either number.
    for number in (new, old):
        status, _, answer = check(gate, json.dumps(outbound(number, TENANT)).encode())
        assert (status, answer["decision"], answer["error_code"]) == (
            200, "rejected", "MARKETING_OPTED_OUT"), answer
    # The same change again (Meta redelivers) changes nothing.
    send_webhook(gate, changed_number(old, new))
    again = send_until(gate, reader, lambda: outbound(new, TENANT),
                       lambda o: code(o) is not None, 30, "a decision after the redelivery")
    assert code(again) == "MARKETING_OPTED_OUT"
    reader.close()
    assert stop_worker(gate) == 0, f"worker failed on SIGTERM; log: {gate.log_path}"


def test_a_changed_number_across_two_workers_through_a_sigkill(bootstrap: str,
                                                              tmp_path: Path) -> None:
    first, second = start_two(bootstrap, tmp_path, uuid.uuid4().hex[:10])
    old, new = numbers_on_two_halves()
    old_partition = partition_for(f"{TENANT}:{e164(old)}", PARTITIONS)
    new_partition = partition_for(f"{TENANT}:{e164(new)}", PARTITIONS)
    assert (old_partition in owned(first)) != (new_partition in owned(first)), \
        "the old and the new number should be on different workers"
    reader = first.reader()
    opted_out_then_changed(first, old, new)
    send_until(first, reader, lambda: outbound(new, TENANT),
               lambda o: code(o) == "MARKETING_OPTED_OUT", 90,
               "marketing to the new number refused for the old number's opt-out")

    # A stream to both numbers; the worker owning the new number's partition dies mid-stream.
    def message(index: int) -> tuple[dict[str, Any], str | None]:
        if index % 3:
            return outbound(new if index % 2 else old, TENANT), "MARKETING_OPTED_OUT"
        return free_form(new, TENANT), None

    stream_through_sigkill(
        first, second, reader, first if new_partition in owned(first) else second, message,
        lambda: [outbound(new, TENANT), outbound(old, TENANT)])
    reader.close()
