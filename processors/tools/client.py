"""Producer helper for upstream services: validated, normalised, keyed, idempotent sends.

    from processors.tools.client import OutboundProducer, InvalidMessage

    with OutboundProducer("127.0.0.1:9092") as gate:  # security=from_env().security for TLS/SASL
        gate.send({"message_id": "m-1", "tenant_id": "acme", "recipient": "+14165550123",
                   "kind": "template", "template": {"name": "order_update", "language": "en_US"},
                   "created_at": "2026-11-26T10:00:00Z"})

The recipient is a phone number (E.164, wa_id digits, or national with recipient_region) or
Meta's business-scoped user ID (``US.13491208655302741918``, parent ``US.ENT.1181...``): send
the number when you have it, the BSUID otherwise. A message that breaks the contract raises
InvalidMessage before anything is sent; a recipient that is neither a valid number nor a valid
BSUID raises InvalidRecipient; a broker that refuses the record raises PublishError.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import orjson
from kafka.errors import KafkaError

from processors.core import contracts
from processors.core.enrich import parse_recipient
from processors.runtime import kafka_clients
from processors.settings import KafkaSecurity, Topics


class GateClientError(Exception):
    """Base of the helper's errors."""


class InvalidMessage(GateClientError):
    """The message breaks schemas/outbound-message.schema.json; the text says where."""


class InvalidRecipient(GateClientError):
    """The recipient is neither a valid phone number nor a valid business-scoped user ID (the
    gate would reject it)."""


class PublishError(GateClientError):
    """Kafka did not take the record."""


def send_path(accepted: dict[str, Any], phone_number_id: str) -> str:
    """The Cloud API path to send an accepted message through: /<PHONE_NUMBER_ID>/
    marketing_messages for a MARKETING template, /<PHONE_NUMBER_ID>/messages for anything
    else (the enrichment's send_endpoint, from the category the gate decided on)."""
    return f"/{phone_number_id}/{accepted['enrichment']['send_endpoint']}"


def gate_key(message: dict[str, Any]) -> str:
    """tenant_id:identity (the +E164 number, or the BSUID): the key the gate keeps recipient
    state under, so it need not re-key the record (the gate itself forwards a send addressed to
    a BSUID it has linked to a number to that number's partition)."""
    recipient = parse_recipient(message["recipient"], message.get("recipient_region"))
    if recipient.identity is None:
        raise InvalidRecipient(f"message {message['message_id']}: {recipient.problem}")
    return f"{message['tenant_id']}:{recipient.identity}"


class OutboundProducer:
    def __init__(self, bootstrap_servers: str, topic: str | None = None,
                 security: KafkaSecurity | None = None, **producer_config: Any) -> None:
        self.topic = topic or Topics().outbound
        try:
            # Idempotent: a retried send is written once.
            self._producer = kafka_clients.producer(bootstrap_servers, security,
                                                    **producer_config)
        except KafkaError as exc:
            raise PublishError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc

    def send(self, message: dict[str, Any], timeout: float | None = None) -> tuple[int, int]:
        """Validate, key and send one message; returns (partition, offset) once written.

        timeout=None waits up to 30 s for the broker's acknowledgement.
        """
        problem = contracts.first_error("outbound_message", message)
        if problem:
            raise InvalidMessage(problem)
        key = gate_key(message)
        try:
            future = self._producer.send(self.topic, key=key.encode(), value=orjson.dumps(message))
            metadata = future.get(timeout=30 if timeout is None else timeout)
        except KafkaError as exc:
            raise PublishError(f"message {message['message_id']} not written: {exc}") from exc
        return metadata.partition, metadata.offset

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> OutboundProducer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class CheckRefused(GateClientError):
    """The check API refused the request (401, 400, 413): fix it, do not retry."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class CheckUnavailable(GateClientError):
    """No answer now (503: partitions moving, owner restoring): ask again after retry_after."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"{reason} (retry after {retry_after:g} s)")
        self.retry_after = retry_after


Checked = dict[str, Any] | list[dict[str, Any]]


class GateChecks:
    """The check API from Python: what the gate would decide for a message now, and what it
    knows of one user.

        checks = GateChecks("http://gate:6066", token)
        answer = checks.check(message)            # or: await checks.check_async(message)
        if answer["decision"] == "rejected": show(answer["reason"], answer["retry_after"])
        user = checks.recipient("acme", "+14165550123")   # or: await recipient_async(...)
        if user["marketing"]["opted_out"]: show("opted out since", user["marketing"]["since"])

    A list of messages (at most 1,000) gets a list of answers; in a list, an answer that could
    not be given now has "status": 503 and "retry_after_seconds" instead of a decision.

    A 503 for the whole request (the partition is moving between workers, its new owner is
    restoring) is asked again after the server's Retry-After, at most `retries` times and
    never waiting more than `max_wait` seconds in all; then CheckUnavailable is raised."""

    def __init__(self, base_url: str, token: str, timeout: float = 5.0, retries: int = 3,
                 max_wait: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 sleep_async: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"}
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.sleep_async = sleep_async

    def _pause(self, unavailable: CheckUnavailable, attempt: int, waited: float) -> float:
        """Seconds to wait before asking again, or re-raise: out of tries or of time."""
        pause = max(0.0, unavailable.retry_after)
        if attempt >= self.retries or waited + pause > self.max_wait:
            raise unavailable
        return pause

    def check(self, message: dict[str, Any] | list[dict[str, Any]]) -> Checked:
        return self._call("POST", "/v1/check", message)

    async def check_async(self, message: dict[str, Any] | list[dict[str, Any]]) -> Checked:
        return await self._call_async("POST", "/v1/check", message)

    def recipient(self, tenant_id: str, identity: str) -> dict[str, Any]:
        """GET /v1/recipients/{tenant}/{identity}: the user's window, opt-out, cool-down,
        pair-rate budget and last decisions (identity: a number or a BSUID)."""
        answer = self._call("GET", recipient_path(tenant_id, identity), None)
        assert isinstance(answer, dict)
        return answer

    async def recipient_async(self, tenant_id: str, identity: str) -> dict[str, Any]:
        answer = await self._call_async("GET", recipient_path(tenant_id, identity), None)
        assert isinstance(answer, dict)
        return answer

    def _call(self, method: str, path: str, sent: Any) -> Checked:
        waited = 0.0
        for attempt in itertools.count():
            try:
                return self._call_once(method, path, sent)
            except CheckUnavailable as unavailable:
                pause = self._pause(unavailable, attempt, waited)
            self.sleep(pause)
            waited += pause
        raise AssertionError("unreachable")

    async def _call_async(self, method: str, path: str, sent: Any) -> Checked:
        waited = 0.0
        for attempt in itertools.count():
            try:
                return await self._call_once_async(method, path, sent)
            except CheckUnavailable as unavailable:
                pause = self._pause(unavailable, attempt, waited)
            await self.sleep_async(pause)
            waited += pause
        raise AssertionError("unreachable")

    def _call_once(self, method: str, path: str, sent: Any) -> Checked:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.base + path, method=method, headers=self.headers,
            data=None if sent is None else orjson.dumps(sent))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return answer_of(response.status, response.read(), sent)
        except urllib.error.HTTPError as refused:
            return answer_of(refused.code, refused.read(), sent,
                             refused.headers.get("Retry-After"))

    async def _call_once_async(self, method: str, path: str, sent: Any) -> Checked:
        import aiohttp

        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout)) as session, \
                session.request(method, self.base + path, headers=self.headers,
                                data=None if sent is None else orjson.dumps(sent)
                                ) as response:
            return answer_of(response.status, await response.read(), sent,
                             response.headers.get("Retry-After"))


def recipient_path(tenant_id: str, identity: str) -> str:
    from urllib.parse import quote

    return f"/v1/recipients/{quote(tenant_id, safe='')}/{quote(identity, safe='')}"


def answer_of(status: int, body: bytes, sent: Any, retry_after: str | None = None) -> Checked:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = {"error": body[:200].decode(errors="replace")}
    if status == 503:
        raise CheckUnavailable(str(payload.get("error")), float(retry_after or 1))
    if status != 200:
        raise CheckRefused(status, str(payload.get("error")))
    if isinstance(sent, list):
        results: list[dict[str, Any]] = payload["results"]
        return results
    answer: dict[str, Any] = payload
    return answer
