"""The client (outbound_gate_client, re-exported with the gate's checks by
processors.tools.client), without a broker."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import outbound_gate_client.producer
import pytest

from processors.runtime.gate.recipient_state import recipient_key
from processors.tools.client import (
    CheckRefused,
    CheckUnavailable,
    GateChecks,
    InvalidMessage,
    InvalidRecipient,
    OutboundProducer,
    gate_key,
)
from tests.factories import message


@pytest.mark.parametrize(("recipient", "region", "key"), [
    ("+14165550123", None, "acme:+14165550123"),
    ("14165550123", None, "acme:+14165550123"),  # Meta's wa_id
    ("(416) 555-0123", "CA", "acme:+14165550123"),
    ("US.13491208655302741918", None, "acme:US.13491208655302741918"),
    ("US.ENT.11815799212886844830", None, "acme:US.ENT.11815799212886844830"),
    ("BR.888", "GB", "acme:BR.888"),  # a BSUID's region is its prefix, not the hint
])
def test_gate_key_is_the_key_the_gate_keeps_state_under(recipient: str, region: str | None,
                                                        key: str) -> None:
    doc = message(recipient=recipient, recipient_region=region)
    assert gate_key(doc) == key
    assert recipient_key("outbound_message", doc) == key  # no repartition hop


@pytest.mark.parametrize("recipient", ["+1202555", "ZZ.1349", "US.", "US.ENT.", "US.12-34"])
def test_invalid_recipients_are_refused(recipient: str) -> None:
    with pytest.raises(InvalidRecipient, match="m-1"):
        gate_key(message(recipient=recipient))


class FakeProducer:
    """Stands in for kafka-python's KafkaProducer: records what is sent."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        metadata = SimpleNamespace(partition=3, offset=len(self.sent) - 1)
        return SimpleNamespace(get=lambda timeout: metadata)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_send_to_a_bsuid_is_keyed_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound_gate_client.producer, "KafkaProducer", FakeProducer)
    with OutboundProducer("127.0.0.1:9", topic="out") as gate:
        assert gate.send(message(recipient="BR.1502576394655843",
                                 template={"name": "notice", "language": "pt_BR"})) == (3, 0)
        with pytest.raises(InvalidRecipient):
            gate.send(message(message_id="m-2", recipient="XX.1"))
        with pytest.raises(InvalidMessage):
            gate.send(message(message_id="m-3", recipient="B" * 141))
        producer = gate._producer
    assert isinstance(producer, FakeProducer)
    assert producer.config["enable_idempotence"] is True
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("out", b"acme:BR.1502576394655843")
    assert b'"recipient":"BR.1502576394655843"' in value


# ---- GateChecks: a 503 is asked again after its Retry-After, bounded --------------------------


PROBLEMS = {
    503: {"type": "urn:outbound-gate:problem:unavailable", "title": "No answer now",
          "status": 503, "detail": "partition 3 is moving"},
    400: {"type": "urn:outbound-gate:problem:invalid-request", "title": "Not a valid request",
          "status": 400, "detail": "unknown tenant_id 'nobody'"},
}


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, Retry-After) of the server's script."""

    protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse shows

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.asked += 1  # type: ignore[attr-defined]
        self.server.peers.add(self.client_address)  # type: ignore[attr-defined]
        status, retry_after = self.server.script.pop(0)  # type: ignore[attr-defined]
        body = orjson.dumps({"decision": "accepted"} if status == 200 else PROBLEMS[status])
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[http.server.HTTPServer]:
    # Threads: a kept-alive connection the client has not closed does not hold up shutdown.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.asked = 0  # type: ignore[attr-defined]
    server.peers = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def checks_of(server: http.server.HTTPServer, slept: list[float], **options: Any) -> GateChecks:
    async def sleep_async(seconds: float) -> None:
        slept.append(seconds)

    return GateChecks(f"http://127.0.0.1:{server.server_address[1]}", "t",
                      sleep=slept.append, sleep_async=sleep_async, **options)


MESSAGE = {"message_id": "m-1"}


def test_a_503_is_asked_again_after_its_retry_after(scripted: http.server.HTTPServer) -> None:
    scripted.script = [(503, "2"), (503, None), (200, None)]  # type: ignore[attr-defined]
    slept: list[float] = []
    answer: Any = checks_of(scripted, slept).check(MESSAGE)
    assert answer == {"decision": "accepted"}
    assert slept == [2.0, 1.0]  # the server's Retry-After, else one second
    assert scripted.asked == 3  # type: ignore[attr-defined]
    assert len(scripted.peers) == 1  # type: ignore[attr-defined]  # one pooled connection


def test_the_async_call_retries_the_same_way(scripted: http.server.HTTPServer) -> None:
    scripted.script = [(503, "0.5"), (200, None)]  # type: ignore[attr-defined]
    slept: list[float] = []
    answer: Any = asyncio.run(checks_of(scripted, slept).check_async(MESSAGE))
    assert answer == {"decision": "accepted"}
    assert slept == [0.5]


def test_retries_end_after_the_last_try(scripted: http.server.HTTPServer) -> None:
    scripted.script = [(503, "1")] * 3  # type: ignore[attr-defined]
    slept: list[float] = []
    with pytest.raises(CheckUnavailable, match="partition 3 is moving"):
        checks_of(scripted, slept, retries=2).check(MESSAGE)
    assert slept == [1.0, 1.0]
    assert scripted.asked == 3  # type: ignore[attr-defined]


def test_retries_never_wait_past_max_wait(scripted: http.server.HTTPServer) -> None:
    scripted.script = [(503, "4"), (503, "4"), (200, None)]  # type: ignore[attr-defined]
    slept: list[float] = []
    with pytest.raises(CheckUnavailable) as raised:
        checks_of(scripted, slept, max_wait=6).check(MESSAGE)
    assert raised.value.retry_after == 4
    assert slept == [4.0]  # a second wait of 4 s would have made 8 s, over max_wait


def test_a_refusal_names_its_problem_type(scripted: http.server.HTTPServer) -> None:
    scripted.script = [(400, None)]  # type: ignore[attr-defined]
    with pytest.raises(CheckRefused) as refused:
        checks_of(scripted, []).check(MESSAGE)
    assert refused.value.status == 400
    assert refused.value.type == "urn:outbound-gate:problem:invalid-request"
    assert refused.value.reason == "unknown tenant_id 'nobody'"


def test_no_answer_at_all_is_gate_unreachable() -> None:
    from processors.tools.client import GateUnreachable
    from tests.e2e.conftest import free_port

    checks = GateChecks(f"http://127.0.0.1:{free_port()}", "t", timeout=2)
    with pytest.raises(GateUnreachable, match="no answer from"):
        checks.check(MESSAGE)
    with pytest.raises(GateUnreachable):
        asyncio.run(checks.check_async(MESSAGE))
