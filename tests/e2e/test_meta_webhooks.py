"""Meta's webhook bodies, unchanged, on the real broker: they change later decisions."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from processors.core import contracts
from processors.core.timeutil import format_rfc3339
from processors.tools.kafka_io import producer
from tests.e2e.conftest import REPO, Gate, poll, start_worker, stop_worker
from tests.e2e.test_live_state import (
    code,
    decision,
    free_form,
    new_recipient,
    outbound,
    send_until,
)
from tests.factories import FIXTURES, template_entry

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
TENANT = f"meta-{RUN}"
OTHER = f"meta-other-{RUN}"  # named by the tenant map, for a body without a header
WABA = "102290129340398"
UNMAPPED_WABA = "999999999999999"
SECOND_PHONE_ID = "106540352242923"  # the second entry of two_entries.json
USED: list[str] = []  # every recipient of this module: none may reach the log


def recipient() -> str:
    number = new_recipient()
    USED.append(number)
    return number


@pytest.fixture(scope="module")
def meta(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("meta")
    tenant_map = tmp / "tenants.json"
    tenant_map.write_text(json.dumps({f"waba:{WABA}": TENANT,
                                      f"phone:{SECOND_PHONE_ID}": OTHER}))
    gate = start_worker(bootstrap, tmp, uuid.uuid4().hex[:10],
                        {"OUTBOUND_GATE_TENANT_MAP": str(tenant_map)})
    yield gate
    assert stop_worker(gate) == 0, f"worker failed on SIGTERM; log: {gate.log_path}"


def publish(gate: Gate, topic: str, body: dict[str, Any], tenant: str | None,
            key: str | None = WABA) -> None:
    """What a webhook receiver does: Meta's body as it came, the tenant as a record header."""
    out = producer(gate.bootstrap)
    headers = [("tenant_id", tenant.encode())] if tenant else []
    out.send(topic, key=key.encode() if key else None, value=orjson.dumps(body),
             headers=headers)
    out.flush()
    out.close()


def now_body(name: str, number: str | None = None) -> dict[str, Any]:
    """A fixture body dated now (Unix seconds, as Meta sends them), for `number`."""
    text = (FIXTURES / "meta_webhook" / f"{name}.json").read_text()
    # Rounded up: Meta's times are whole seconds, and a body stamped in the second of an entry
    # made before it (a catalog import, stamped to the millisecond) must still be the newer.
    text = text.replace("1795694400", str(math.ceil(time.time())))
    for fixture_number in ("5511912345678", "14165550123", "5511987654321"):
        if number is not None:
            text = text.replace(fixture_number, number)
    body: dict[str, Any] = json.loads(text)
    return body


@pytest.mark.parametrize(("meta_code", "error_code", "retryable"), [
    (131049, "USER_MARKETING_TEMPLATE_LIMIT", True),
    (130472, "USER_IN_MARKETING_EXPERIMENT", False),  # Meta's marketing experiment
])
def test_failed_status_body_then_marketing_send(meta: Gate, meta_code: int, error_code: str,
                                                retryable: bool) -> None:
    reader = meta.reader()
    to = recipient()
    publish(meta, meta.topics.statuses, now_body(f"status_failed_{meta_code}", to), TENANT)
    blocked = send_until(meta, reader, lambda: outbound(to, TENANT),
                         lambda o: code(o) == error_code, 60,
                         f"{error_code} after a {meta_code} status body")
    assert blocked.value["meta_error_code"] == meta_code
    assert blocked.value["retryable"] is retryable
    reader.close()


def test_inbound_body_opens_the_window(meta: Gate) -> None:
    reader = meta.reader()
    to = recipient()
    assert code(decision(meta, reader, free_form(to, TENANT))) == \
        "OUTSIDE_SERVICE_WINDOW"
    publish(meta, meta.topics.inbound, now_body("inbound_text", to), TENANT)
    send_until(meta, reader, lambda: free_form(to, TENANT),
               lambda o: o.topic == meta.topics.accepted, 60,
               "a free-form send to be accepted after an inbound message body")
    reader.close()


def test_user_initiated_call_body_opens_the_window(meta: Gate) -> None:
    reader = meta.reader()
    to = recipient()
    business_call = now_body("calls_connect_business_initiated", to)
    publish(meta, meta.topics.webhooks, business_call, TENANT)
    assert code(decision(meta, reader, free_form(to, TENANT))) == "OUTSIDE_SERVICE_WINDOW"
    call = now_body("calls_connect_user_initiated", to)
    value = call["entry"][0]["changes"][0]["value"]
    value["calls"][0].pop("from_user_id")  # this test's number only: no shared BSUID link
    value.pop("contacts")
    publish(meta, meta.topics.webhooks, call, TENANT)
    send_until(meta, reader, lambda: free_form(to, TENANT),
               lambda o: o.topic == meta.topics.accepted, 60,
               "a free-form send to be accepted after a user-initiated call body")
    reader.close()


def test_user_preferences_stop_body(meta: Gate) -> None:
    reader = meta.reader()
    to = recipient()
    publish(meta, meta.topics.preferences, now_body("user_preferences_stop", to),
            TENANT)
    out = send_until(meta, reader, lambda: outbound(to, TENANT),
                     lambda o: code(o) == "MARKETING_OPTED_OUT", 60,
                     "MARKETING_OPTED_OUT after a user_preferences stop body")
    assert out.value["meta_error_code"] == 131050
    reader.close()


def test_catalog_import_then_paused_status_body(meta: Gate) -> None:
    tenant = f"{TENANT}-catalog"
    result = subprocess.run(
        [sys.executable, "-m", "processors.cli.main", "catalog", "import",
         str(FIXTURES / "template_list.json"), "--tenant", tenant],
        env=meta.env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "published 4 entries" in result.stdout
    key = f"{tenant}:promo:en_US"
    poll(lambda: (meta.catalog_entry(key) or {}).get("status") == "APPROVED", 60,
         f"the imported {key} in the worker's catalog", meta.problem)
    assert (meta.catalog_entry(f"{tenant}:login_code:en_US") or {}).get("category") == \
        "AUTHENTICATION"
    reader = meta.reader()
    to = recipient()
    assert decision(meta, reader, outbound(to, tenant)).topic == meta.topics.accepted

    publish(meta, meta.topics.templates, now_body("template_status_paused"), tenant,
            key=f"{tenant}:promo:en_US")
    poll(lambda: (meta.catalog_entry(key) or {}).get("status") == "PAUSED", 60,
         f"{key} to be PAUSED by the status body", meta.problem)
    entry = meta.catalog_entry(key) or {}
    assert entry["category"] == "MARKETING"  # the status body has none: the import's is kept
    out = send_until(meta, reader, lambda: outbound(to, tenant),
                     lambda o: code(o) == "TEMPLATE_PAUSED", 60, "TEMPLATE_PAUSED")
    assert out.value["enrichment"]["category_source"] == "catalog"
    reader.close()


def test_two_entries_on_the_webhooks_topic_with_the_tenant_map(meta: Gate) -> None:
    reader = meta.reader()
    limited, writer = recipient(), recipient()
    body = now_body("two_entries")
    first, second = body["entry"]
    first["changes"][0]["value"]["statuses"][0]["recipient_id"] = limited
    second["changes"][0]["value"]["messages"][0]["from"] = writer
    second["changes"][0]["value"]["contacts"][0]["wa_id"] = writer
    publish(meta, meta.topics.webhooks, body, None)  # no header: the map names both tenants
    send_until(meta, reader, lambda: outbound(limited, TENANT),
               lambda o: code(o) == "USER_MARKETING_TEMPLATE_LIMIT", 60,
               "the first entry's 131049 applied for the WABA's tenant")
    send_until(meta, reader, lambda: free_form(writer, OTHER),
               lambda o: o.topic == meta.topics.accepted, 60,
               "the second entry's inbound message applied for the phone number's tenant")
    reader.close()


def test_body_without_tenant_is_dead_lettered(meta: Gate) -> None:
    reader = meta.reader()
    body = now_body("status_failed_131049", recipient())
    body["entry"][0]["id"] = UNMAPPED_WABA
    publish(meta, meta.topics.statuses, body, None, key=UNMAPPED_WABA)
    not_meta = {"object": "page", "entry": []}
    publish(meta, meta.topics.inbound, not_meta, TENANT, key="not-meta")
    letters = reader.wait_for(
        lambda outs: len([o for o in outs if o.topic == meta.topics.dlq]) >= 2, 60,
        "two dead letters")
    by_key = {o.key: o.value for o in letters if o.topic == meta.topics.dlq}
    assert by_key[UNMAPPED_WABA]["reason"] == "no_tenant"
    assert by_key[UNMAPPED_WABA]["topic"] == meta.topics.statuses
    assert json.loads(base64.b64decode(by_key[UNMAPPED_WABA]["value_base64"])) == body
    assert by_key["not-meta"]["reason"] == "not_meta_webhook"
    assert by_key["not-meta"]["headers"] == {"tenant_id": TENANT}  # a replay re-attaches it
    for letter in by_key.values():
        assert contracts.first_error("dead_letter", letter) is None
    reader.close()


def test_no_phone_number_in_the_log(meta: Gate) -> None:
    log = meta.log()
    assert "dead letter" in log
    assert USED, "no recipient was used"
    for number in USED:
        assert number not in log, "a phone number reached the worker's log"



def test_category_update_on_the_webhooks_topic_keeps_the_status(meta: Gate) -> None:
    tenant = f"{TENANT}-category"
    key = f"{tenant}:welcome_template:en_US"
    meta.send(meta.topics.templates, key, template_entry(
        "welcome_template", "UTILITY", "PAUSED", format_rfc3339(time.time() - 60), tenant))
    poll(lambda: (meta.catalog_entry(key) or {}).get("status") == "PAUSED", 60,
         f"{key} in the worker's catalog", meta.problem)
    publish(meta, meta.topics.webhooks, now_body("template_category_update_marketing"), tenant)
    poll(lambda: (meta.catalog_entry(key) or {}).get("category") == "MARKETING", 60,
         f"{key} recategorised MARKETING by the body on the webhooks topic", meta.problem)
    assert (meta.catalog_entry(key) or {})["status"] == "PAUSED"
