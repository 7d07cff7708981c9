"""The check API from Python, sync or async, over pooled keep-alive connections (httpx)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import httpx

from outbound_gate_client.errors import CheckRefused, CheckUnavailable, GateUnreachable
from outbound_gate_client.types import OPERATIONS, CheckAnswer, Recipient, Unavailable

Checked = CheckAnswer | list[CheckAnswer | Unavailable]


class GateChecks:
    """What the gate would decide for a message now, and what it knows of one user.

        with GateChecks("http://gate:6066", token) as checks:
            answer = checks.check(message)            # or: await checks.check_async(message)
            if answer["decision"] == "rejected": show(answer["reason"])
            user = checks.recipient("acme", "+14165550123")   # or: recipient_async(...)

    A list of messages (at most 1,000) gets a list of answers; in a list, an answer that could
    not be given now is an Unavailable problem (status 503, retry_after_seconds).

    A 503 for the whole request (the partition is moving between workers, its new owner is
    restoring) is asked again after the server's Retry-After, at most `retries` times and
    never waiting more than `max_wait` seconds in all; then CheckUnavailable is raised. Other
    errors raise CheckRefused; no answer at all (refused, timed out) GateUnreachable. One
    connection pool serves every sync call, another every async call of one event loop;
    close() / aclose() (or `with` / `async with`) release them."""

    def __init__(self, base_url: str, token: str, timeout: float = 5.0, retries: int = 3,
                 max_wait: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 sleep_async: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.sleep_async = sleep_async
        self._client: httpx.Client | None = None
        # An AsyncClient belongs to the event loop it was made in.
        self._async: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    # ---- the calls ---------------------------------------------------------------------------

    def check(self, message: dict[str, Any] | list[dict[str, Any]]) -> Checked:
        method, path = OPERATIONS["checkMessages"]
        return checked(message, self._call(method, path, message))

    async def check_async(self, message: dict[str, Any] | list[dict[str, Any]]) -> Checked:
        method, path = OPERATIONS["checkMessages"]
        return checked(message, await self._call_async(method, path, message))

    def recipient(self, tenant_id: str, identity: str) -> Recipient:
        """GET /v1/recipients/{tenant}/{identity}: the user's window, opt-out, cool-down,
        pair-rate budget and last decisions (identity: a number or a BSUID)."""
        method, _ = OPERATIONS["getRecipient"]
        return cast(Recipient, self._call(method, recipient_path(tenant_id, identity), None))

    async def recipient_async(self, tenant_id: str, identity: str) -> Recipient:
        method, _ = OPERATIONS["getRecipient"]
        answer = await self._call_async(method, recipient_path(tenant_id, identity), None)
        return cast(Recipient, answer)

    # ---- connections ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async[1].aclose()
            self._async = None

    def __enter__(self) -> GateChecks:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> GateChecks:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()
        self.close()

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, headers=self.headers)
        return self._client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop or loop.is_closed():
            # The pool of a loop that has ended cannot be closed from this one; dropped.
            self._async = (loop, httpx.AsyncClient(timeout=self.timeout, headers=self.headers))
        return self._async[1]

    # ---- retries of a 503 ----------------------------------------------------------------------

    def _pause(self, unavailable: CheckUnavailable, attempt: int, waited: float) -> float:
        """Seconds to wait before asking again, or re-raise: out of tries or of time."""
        pause = max(0.0, unavailable.retry_after)
        if attempt >= self.retries or waited + pause > self.max_wait:
            raise unavailable
        return pause

    def _call(self, method: str, path: str, sent: Any) -> Any:
        waited = 0.0
        for attempt in itertools.count():
            try:
                response = self._sync_client().request(method, self.base + path,
                                                       content=body_of(sent))
            except httpx.TransportError as exc:
                raise unreachable(self.base, exc) from exc
            try:
                return answer_of(response)
            except CheckUnavailable as unavailable:
                pause = self._pause(unavailable, attempt, waited)
            self.sleep(pause)
            waited += pause
        raise AssertionError("unreachable")

    async def _call_async(self, method: str, path: str, sent: Any) -> Any:
        waited = 0.0
        for attempt in itertools.count():
            try:
                response = await self._async_client().request(method, self.base + path,
                                                              content=body_of(sent))
            except httpx.TransportError as exc:
                raise unreachable(self.base, exc) from exc
            try:
                return answer_of(response)
            except CheckUnavailable as unavailable:
                pause = self._pause(unavailable, attempt, waited)
            await self.sleep_async(pause)
            waited += pause
        raise AssertionError("unreachable")


def unreachable(base: str, error: httpx.TransportError) -> GateUnreachable:
    return GateUnreachable(f"no answer from {base}: {type(error).__name__}: {error}")


def recipient_path(tenant_id: str, identity: str) -> str:
    _, template = OPERATIONS["getRecipient"]
    return template.format(tenant=quote(tenant_id, safe=""), identity=quote(identity, safe=""))


def body_of(sent: Any) -> bytes | None:
    return None if sent is None else json.dumps(sent, separators=(",", ":")).encode()


def answer_of(response: httpx.Response) -> Any:
    """The JSON answer of a 200; CheckUnavailable for a 503, CheckRefused for any other."""
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.content[:200].decode(errors="replace")}
    if response.status_code == 200:
        return payload
    detail = payload.get("detail", payload.get("error")) if isinstance(payload, dict) else None
    if response.status_code == 503:
        retry_after = response.headers.get("Retry-After")
        try:
            seconds = float(retry_after) if retry_after else 1.0
        except ValueError:
            seconds = 1.0
        raise CheckUnavailable(str(detail), seconds)
    kind = payload.get("type") if isinstance(payload, dict) else None
    raise CheckRefused(response.status_code, str(detail), kind)


def checked(sent: Any, payload: Any) -> Checked:
    if isinstance(sent, list):
        return cast(list[CheckAnswer | Unavailable], payload["results"])
    return cast(CheckAnswer, payload)
