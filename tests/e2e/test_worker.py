"""The real worker on the real broker: produce with kafka-python, read the three output topics."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest

from processors.core import contracts
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.tools.kafka_io import Output, OutputReader
from tests.e2e.conftest import Gate, poll
from tests.factories import message, template_entry

pytestmark = pytest.mark.e2e

TENANT = "e2e-tenant"


def new_message(**overrides: Any) -> dict[str, Any]:
    return message(message_id=f"m-{uuid.uuid4().hex[:12]}", tenant_id=TENANT,
                   created_at=format_rfc3339(time.time()), **overrides)


def decision_for(reader: OutputReader, message_id: str, timeout: float = 60) -> Output:
    seen = reader.wait_for(lambda outs: any(o.value.get("message_id") == message_id
                                            for o in outs),
                           timeout, f"a decision for {message_id}")
    matches = [o for o in seen if o.value.get("message_id") == message_id]
    assert len(matches) == 1, f"{len(matches)} decisions for {message_id}"
    return matches[0]


def publish_template(gate: Gate, name: str, category: str, status: str) -> dict[str, Any]:
    entry = template_entry(name=name, category=category, status=status, tenant_id=TENANT,
                           updated_at=format_rfc3339(time.time() - 1))
    key = f"{TENANT}:{name}:en_US"
    gate.send(gate.topics.templates, key, entry)
    poll(lambda: (gate.catalog_entry(key) or {}).get("updated_at") == entry["updated_at"],
         60, f"the worker's catalog to hold {key} as {status}", gate.problem)
    return entry


def test_us_marketing_rejected_with_every_field(gate: Gate) -> None:
    publish_template(gate, "spring_sale", "MARKETING", "APPROVED")
    reader = gate.reader()
    sent = new_message(recipient="12025550143",
                       template={"name": "spring_sale", "language": "en_US"},
                       context={"ticket_id": "T-1"})
    before = time.time()
    gate.send(gate.topics.outbound, sent["recipient"], sent)
    out = decision_for(reader, sent["message_id"])
    assert out.topic == gate.topics.rejected
    assert out.key == f"{TENANT}:+12025550143"
    rejection = out.value
    assert contracts.first_error("rejection", rejection) is None
    assert rejection["schema_version"] == 1
    assert rejection["message_id"] == sent["message_id"]
    assert rejection["tenant_id"] == TENANT
    assert rejection["error_code"] == "MARKETING_PAUSED_US"
    assert rejection["meta_error_code"] == 131049
    assert "US phone numbers" in rejection["reason"]
    assert rejection["retryable"] is False and rejection["retry_after"] is None
    assert rejection["billable"] is False
    assert rejection["violations"] == ["MARKETING_PAUSED_US"]
    assert rejection["policy"]["id"] == "meta-whatsapp-default" and rejection["policy"]["version"]
    assert rejection["enrichment"] == {
        "recipient_e164": "+12025550143", "recipient_kind": "phone", "recipient_region": "US",
        "calling_code": 1,
        "number_type": "FIXED_LINE_OR_MOBILE", "template_category": "MARKETING",
        "category_source": "catalog", "send_endpoint": "marketing_messages"}
    assert rejection["message"] == sent
    assert before - 1 <= parse_rfc3339(rejection["decided_at"]) <= time.time() + 1
    reader.close()


def test_canadian_marketing_accepted(gate: Gate) -> None:
    publish_template(gate, "spring_sale", "MARKETING", "APPROVED")
    reader = gate.reader()
    sent = new_message(recipient="+14165550123",
                       template={"name": "spring_sale", "language": "en_US"})
    gate.send(gate.topics.outbound, "anything", sent)
    out = decision_for(reader, sent["message_id"])
    assert out.topic == gate.topics.accepted
    assert out.key == f"{TENANT}:+14165550123"
    assert contracts.first_error("accepted_message", out.value) is None
    assert out.value["enrichment"]["recipient_region"] == "CA"
    assert out.value["enrichment"]["send_endpoint"] == "marketing_messages"
    assert out.value["policy"]["monitored"] == []
    assert {k: out.value[k] for k in sent} == sent
    reader.close()


def test_us_utility_accepted(gate: Gate) -> None:
    publish_template(gate, "order_update", "UTILITY", "APPROVED")
    reader = gate.reader()
    sent = new_message(recipient="+12025550143",
                       template={"name": "order_update", "language": "en_US",
                                 "category": "MARKETING"})
    gate.send(gate.topics.outbound, sent["recipient"], sent)
    out = decision_for(reader, sent["message_id"])
    assert out.topic == gate.topics.accepted
    assert out.value["enrichment"]["template_category"] == "UTILITY"
    assert out.value["enrichment"]["category_source"] == "catalog"
    # Sent as MARKETING, recategorised UTILITY by the catalog: the plain /messages endpoint.
    assert out.value["enrichment"]["send_endpoint"] == "messages"
    reader.close()


def test_catalog_update_changes_a_later_decision(gate: Gate) -> None:
    publish_template(gate, "flash_offer", "MARKETING", "APPROVED")
    reader = gate.reader()
    first = new_message(recipient="+5511912345678",
                        template={"name": "flash_offer", "language": "en_US"})
    gate.send(gate.topics.outbound, first["recipient"], first)
    assert decision_for(reader, first["message_id"]).topic == gate.topics.accepted

    publish_template(gate, "flash_offer", "MARKETING", "PAUSED")
    second = new_message(recipient="+5511912345678",
                         template={"name": "flash_offer", "language": "en_US"})
    gate.send(gate.topics.outbound, second["recipient"], second)
    out = decision_for(reader, second["message_id"])
    assert out.topic == gate.topics.rejected
    assert (out.value["error_code"], out.value["meta_error_code"], out.value["retryable"]) == \
        ("TEMPLATE_PAUSED", 132015, True)
    reader.close()


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00garbage",
                                 b'{"message_id": "x", "kind": "carrier-pigeon"}'])
def test_malformed_event_dead_lettered_and_next_event_decided(gate: Gate, raw: bytes) -> None:
    reader = gate.reader()
    gate.send_raw(gate.topics.outbound, b"bad-key", raw)
    good = new_message(recipient="+14165550123", kind="free_form", template=None)
    gate.send(gate.topics.outbound, "bad-key", good)  # same key: same partition, after it
    letters = reader.wait_for(lambda outs: any(o.topic == gate.topics.dlq for o in outs), 60,
                              "a dead letter")
    letter = next(o for o in letters if o.topic == gate.topics.dlq)
    assert contracts.first_error("dead_letter", letter.value) is None
    assert base64.b64decode(letter.value["value_base64"]) == raw
    assert letter.value["topic"] == gate.topics.outbound
    assert letter.value["key"] == "bad-key" and letter.key == "bad-key"
    assert letter.value["partition"] >= 0 and letter.value["offset"] >= 0
    assert letter.value["reason"] in {"not_json", "not_utf8", "schema_invalid"}
    assert letter.value["error"]
    out = decision_for(reader, good["message_id"])
    assert out.value["error_code"] == "OUTSIDE_SERVICE_WINDOW"  # no inbound message from them
    assert gate.problem() is None
    reader.close()


def test_worker_log_holds_no_phone_number(gate: Gate) -> None:
    log = gate.log()
    assert log, "the worker wrote no log at all"
    for number in ("12025550143", "14165550123", "5511912345678"):
        assert number not in log, "a phone number reached the worker's log"
