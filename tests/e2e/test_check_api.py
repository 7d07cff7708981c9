"""The check API on two workers of one group: either worker answers a check for a user on
either worker's partitions, with the decision the stream then makes, and what it knows of
that user; checks record nothing; bad requests get 401/400/413 with a one-line reason and
leave the stream alone."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from processors.core import contracts
from processors.core.enrich import parse_recipient
from processors.runtime.engine.partitioner import partition_for
from processors.tools.client import CheckRefused, GateChecks
from tests.e2e.conftest import Gate, poll, start_worker, stop_worker
from tests.e2e.test_live_state import decision, free_form, new_recipient, now_rfc3339
from tests.e2e.two_workers import owned
from tests.factories import inbound, template_entry

pytestmark = pytest.mark.e2e

TOKEN = "e2e-check-token"
TENANT = "checks"
PARTITIONS = 4
VOLATILE = {"decided_at", "preview", "already_decided", "decision"}


def ask(gate: Gate, path: str, body: bytes | None = None,
        token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    """One request (POST when there is a body): status, headers, JSON answer."""
    request = urllib.request.Request(f"{gate.base_url}{path}", data=body,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def check(gate: Gate, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    return ask(gate, "/v1/check", body, token)


def check_get(gate: Gate, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    return ask(gate, path, None, token)


def known_tenant(*gates: Gate) -> None:
    """The API answers for tenants the gate knows: one with a template in the catalog."""
    key = f"{TENANT}:welcome:en_US"
    gates[0].send(gates[0].topics.templates, key,
                  template_entry("welcome", "UTILITY", tenant_id=TENANT))
    poll(lambda: all(gate.catalog_entry(key) for gate in gates), 60,
         "the tenant's template in every worker's catalog", gates[0].problem)


def user_on(partitions: set[int]) -> str:
    while True:
        number = new_recipient()
        e164 = parse_recipient(number).e164
        if partition_for(f"{TENANT}:{e164}", PARTITIONS) in partitions:
            return number


def without(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_either_worker_answers_as_the_stream_then_decides(bootstrap: str,
                                                          tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    env = {"OUTBOUND_GATE_API_TOKEN": TOKEN}
    first = start_worker(bootstrap, tmp_path, run_id, env, name="first")
    second = start_worker(bootstrap, tmp_path, run_id, env, name="second")
    poll(lambda: len(owned(first)) == 2 and len(owned(second)) == 2
         and not owned(first) & owned(second), 90,
         "the two workers to hold two partitions each", first.problem)
    known_tenant(first, second)
    opened = [user_on(owned(first)), user_on(owned(second))]
    closed = [user_on(owned(first)), user_on(owned(second))]
    for user in opened:  # an inbound message opens the service window
        first.send(first.topics.inbound, user, inbound(user, now_rfc3339(), TENANT))

    def window_open() -> bool:
        return all(check(first, json.dumps(free_form(user, TENANT)).encode())[2]
                   .get("decision") == "accepted" for user in opened)

    poll(window_open, 60, "checks to see both service windows open", first.problem)
    reader = first.reader()
    for user, expected in [*((u, "accepted") for u in opened), *((u, "rejected") for u in closed)]:
        message = free_form(user, TENANT)
        body = json.dumps(message).encode()
        answers = [check(gate, body) for gate in (first, second)]
        for status, _, record in answers:
            assert status == 200, record
            assert record["preview"] is True and record["decision"] == expected, record
        assert without(answers[0][2]) == without(answers[1][2])
        for _ in range(100):  # checks record nothing: no de-duplication entry either
            assert check(second, body)[0] == 200
        out = decision(first, reader, message)
        assert without(out.value) == without(answers[0][2]), "the stream decided otherwise"
        assert (out.topic == first.topics.accepted) == (expected == "accepted")

    batch = [free_form(user, TENANT) for user in [*opened, *closed]]
    status, _, answer = check(second, json.dumps(batch).encode())
    assert status == 200 and [r["decision"] for r in answer["results"]] == \
        ["accepted", "accepted", "rejected", "rejected"]

    refusals = {
        "no token": check(first, json.dumps(batch[0]).encode(), token=None),
        "wrong token": check(first, json.dumps(batch[0]).encode(), token="nope"),
        "bad JSON": check(first, b'{"message_id": '),
        "wrong schema": check(first, json.dumps({**batch[0], "kind": "fax"}).encode()),
        "10 MB": check(first, b"[" + b" " * 10_000_000 + b"]"),
        "too many": check(first, json.dumps([batch[0]] * 1001).encode()),
        "unknown tenant": check(first, json.dumps({**batch[0], "tenant_id": "nobody"}).encode()),
    }
    statuses = {what: status for what, (status, _, _) in refusals.items()}
    assert statuses == {"no token": 401, "wrong token": 401, "bad JSON": 400,
                        "wrong schema": 400, "10 MB": 413, "too many": 413,
                        "unknown tenant": 400}
    kinds = {"no token": "unauthorized", "wrong token": "unauthorized",
             "bad JSON": "invalid-request", "wrong schema": "invalid-request",
             "10 MB": "too-large", "too many": "too-large", "unknown tenant": "unknown-tenant"}
    for what, (status, headers, body) in refusals.items():
        assert body["type"] == f"urn:outbound-gate:problem:{kinds[what]}", (what, body)
        assert body["status"] == status and isinstance(body["title"], str), what
        assert headers["Content-Type"].startswith("application/problem+json"), what
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], what
        assert opened[0] not in body["detail"]
    # The client (sync and async) says the same; its errors name the problem.
    checks = GateChecks(first.base_url, TOKEN)
    sync_answer = checks.check(batch[0])
    async_answer = asyncio.run(checks.check_async(batch[0]))
    assert isinstance(sync_answer, dict) and isinstance(async_answer, dict)
    assert without(sync_answer) == without(async_answer) and sync_answer["preview"] is True
    listed = checks.check(batch)
    assert isinstance(listed, list)
    assert [without(a) for a in listed] == [without(b) for b in answer["results"]]
    with pytest.raises(CheckRefused) as refused:
        GateChecks(first.base_url, "nope").check(batch[0])
    assert refused.value.status == 401
    assert refused.value.type == "urn:outbound-gate:problem:unauthorized"

    # Every answer has the shape the OpenAPI document (served by the worker) says.
    status, _, served = check_get(second, "/v1/openapi.json")
    kept = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "openapi.json")
                      .read_text())
    # Served with the schema files it names inside it: every $ref resolves in the document.
    assert status == 200 and served == contracts.openapi_document()
    shapes = {"answer": ("CheckAnswer", sync_answer), "batch": ("Batch", answer),
              **{what: ("Problem", body) for what, (_, _, body) in refusals.items()}}
    for what, (name, body) in shapes.items():
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                          "components": served["components"]})
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, f"{what}: {errors}"
    responses = kept["paths"]["/v1/check"]["post"]["responses"]
    assert {str(s) for s in statuses.values()} <= set(responses)

    # What the gate knows of each user, asked of either worker (one forwards to the owner).
    for user, window in [(opened[0], True), (opened[1], True), (closed[0], False)]:
        e164 = parse_recipient(user).e164
        assert e164 is not None
        path = f"/v1/recipients/{TENANT}/{urllib.parse.quote(e164, safe='')}"
        views = [check_get(gate, path) for gate in (first, second)]
        for status, _, view in views:
            assert status == 200, view
            assert (view["service_window"]["open_until"] is not None) == window, view
            assert view["user"] == e164 and view["marketing"]["opted_out"] is False
        assert {**views[0][2], "as_of": None} == {**views[1][2], "as_of": None}
        outcomes = {d["message_id"]: d["outcome"] for d in views[0][2]["last_decisions"]}
        assert outcomes, "the stream's decisions for this user are not shown"
        assert set(outcomes.values()) == {"accepted" if window else "OUTSIDE_SERVICE_WINDOW"}
        errors = [e.message for e in Draft202012Validator(
            {"$ref": "#/components/schemas/Recipient", "components": kept["components"]}
        ).iter_errors(views[0][2])]
        assert not errors, errors
    e164 = parse_recipient(opened[1]).e164
    assert e164 is not None
    by_client = checks.recipient(TENANT, e164)
    assert by_client["user"] == e164
    assert asyncio.run(checks.recipient_async(TENANT, e164))["user"] == e164
    asked = {
        "no token": check_get(first, f"/v1/recipients/{TENANT}/%2B{e164[1:]}", token=None),
        "unknown tenant": check_get(first, f"/v1/recipients/nobody/%2B{e164[1:]}"),
        "not an identity": check_get(first, f"/v1/recipients/{TENANT}/12ab"),
    }
    assert {what: status for what, (status, _, _) in asked.items()} == {
        "no token": 401, "unknown tenant": 400, "not an identity": 400}
    asked_kinds = {"no token": "unauthorized", "unknown tenant": "unknown-tenant",
                   "not an identity": "invalid-identity"}
    for what, (_, _, body) in asked.items():
        assert body["type"] == f"urn:outbound-gate:problem:{asked_kinds[what]}", what
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], what
        assert e164[1:] not in body["detail"], what
    assert set(kept["paths"]["/v1/recipients/{tenant}/{identity}"]["get"]["responses"]) >= {
        "200", "400", "401", "503"}

    # the stream went on
    out = decision(second, reader, free_form(opened[1], TENANT))
    assert out.topic == second.topics.accepted
    e164 = parse_recipient(opened[0]).e164
    assert e164 is not None
    for gate in (first, second):  # no number in the logs
        assert opened[0] not in gate.log() and e164 not in gate.log()
    reader.close()
    for gate in (first, second):
        assert stop_worker(gate) == 0


def test_checks_during_rebalances_are_right_or_503(bootstrap: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    env = {"OUTBOUND_GATE_API_TOKEN": TOKEN}
    first = start_worker(bootstrap, tmp_path, run_id, env, name="first")
    second = start_worker(bootstrap, tmp_path, run_id, env, name="second")
    poll(lambda: len(owned(first)) == 2 and len(owned(second)) == 2, 90,
         "the two workers to hold two partitions each", first.problem)
    known_tenant(first, second)
    opened = [user_on({p}) for p in range(PARTITIONS)]
    closed = [user_on({p}) for p in range(PARTITIONS)]
    for user in opened:
        first.send(first.topics.inbound, user, inbound(user, now_rfc3339(), TENANT))
    expected = {**{u: "accepted" for u in opened}, **{u: "rejected" for u in closed}}
    bodies = {u: json.dumps(free_form(u, TENANT)).encode() for u in expected}
    poll(lambda: all(check(first, bodies[u])[2].get("decision") == "accepted" for u in opened),
         60, "checks to see the service windows open", first.problem)

    answers: list[tuple[str, int, dict[str, str], Any]] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            for user, body in bodies.items():
                answers.append((user, *check(first, body)))

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    third = start_worker(bootstrap, tmp_path, run_id, env, name="third")  # the group grows
    poll(lambda: bool(owned(third)), 90, "the third worker to get partitions", third.problem)
    assert stop_worker(second) == 0  # and shrinks
    poll(lambda: len(owned(first) | owned(third)) == PARTITIONS, 90,
         "the two remaining workers to hold every partition", first.problem)
    count = len(answers)
    poll(lambda: len(answers) > count + 2 * len(bodies), 60, "checks after the rebalances",
         first.problem)
    done.set()
    asker.join(20)
    statuses = Counter(status for _, status, _, _ in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0
    for user, status, headers, body in answers:
        if status == 503:
            assert headers.get("Retry-After") == "1" and isinstance(body["detail"], str)
            assert body["type"] == "urn:outbound-gate:problem:unavailable"
        else:
            assert body["decision"] == expected[user], (user, body)
    for gate in (first, third):
        assert stop_worker(gate) == 0
