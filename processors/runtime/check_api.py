"""The check API: POST /v1/check answers, from live state, what the gate would decide now.

Any worker answers any request. The state of a user lives with the worker that owns the
user's partition (Kafka Streams calls this an interactive query): a worker that does not own it
finds the owner in the route group's description (each member's client id carries its URL,
processors.runtime.kafka_clients.route_consumer) and forwards the request there, once. While
partitions move or a store restores there is no owner to ask: 503 with Retry-After. A check
records nothing: no state change, no de-duplication entry, no budget used.

Requests carry `Authorization: Bearer <OUTBOUND_GATE_API_TOKEN>`; bodies are one outbound
message (the outbound contract) or a list of at most 1,000. No number or BSUID is logged or
used as a metric label.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

import aiohttp
import faust
import orjson
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from faust.web import Request, Response, View

from processors.core import contracts
from processors.core.decode import DecodeError, decode
from processors.runtime import kafka_clients
from processors.runtime.metrics import GateMetrics
from processors.runtime.routing import Preview, Router
from processors.runtime.stream_thread import StreamThread
from processors.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_BATCH = 1000
RETRY_SECONDS = 1
OWNERS_TTL_SECONDS = 2.0
FORWARDED = "X-Outbound-Gate-Forwarded"  # value: JSON list of head identities (or nulls)
FORWARD_TIMEOUT_SECONDS = 5.0


class Refused(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Owners:
    """Partition -> URL of the worker that owns it, from the route group's description
    (cached briefly; asked again when a partition has no owner in it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group = f"{settings.app_id}-route"
        self.admin: Any = None
        self.urls: dict[int, str] = {}
        self.at = 0.0

    async def url_of(self, partition: int) -> str | None:
        if partition not in self.urls or time.monotonic() - self.at > OWNERS_TTL_SECONDS:
            await self.refresh()
        return self.urls.get(partition)

    async def refresh(self) -> None:
        if self.admin is None:
            self.admin = kafka_clients.route_admin(self.settings)
        future = self.admin.describe_consumer_groups([self.group],
                                                     request_timeout=5)[self.group]
        try:
            description = await asyncio.wait_for(asyncio.wrap_future(future), 6)
        except Exception as exc:  # broker away: no owner known, the caller answers 503
            log.warning("route group not described (%s)", type(exc).__name__,
                        extra={"event": "owners_unknown"})
            self.urls = {}
            return
        urls: dict[int, str] = {}
        for member in description.members:
            url = member.client_id.partition("@")[2]
            if url and member.assignment is not None:
                for tp in member.assignment.topic_partitions:
                    urls[tp.partition] = url
        self.urls, self.at = urls, time.monotonic()


def bearer_refusal(request: Request, token: str | None) -> str | None:
    if not token:
        return "the check API is off: OUTBOUND_GATE_API_TOKEN is not set on this worker"
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return "missing 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(value.strip().encode(), token.encode()):
        return "wrong API token"
    return None


async def read_messages(request: Request) -> tuple[list[dict[str, Any]], bool]:
    """The body's outbound messages, validated; and whether it was a list."""
    # Faust hands over aiohttp's request, which knows the declared length.
    if (getattr(request, "content_length", None) or 0) > MAX_BODY_BYTES:
        raise Refused(413, f"body over {MAX_BODY_BYTES:,} bytes")
    try:
        body = await request.read()
    except HTTPRequestEntityTooLarge as exc:  # a body that did not say its length
        raise Refused(413, f"body over {MAX_BODY_BYTES:,} bytes") from exc
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not JSON: {exc}") from exc
    batch = isinstance(payload, list)
    items = payload if batch else [payload]
    if batch and not 1 <= len(items) <= MAX_BATCH:
        raise Refused(400 if not items else 413,
                      f"a batch holds 1 to {MAX_BATCH:,} messages, not {len(items):,}")
    documents = []
    for index, item in enumerate(items):
        try:  # each message as the stream reads one: the same size, depth and schema checks
            documents.append(decode("outbound_message", orjson.dumps(item)))
        except DecodeError as exc:
            where = f"message {index}: " if batch else ""
            raise Refused(400, f"{where}{exc.reason}: {exc}") from exc
    return documents, batch


def unavailable(reason: str) -> dict[str, Any]:
    return {"status": 503, "error": reason, "retry_after_seconds": RETRY_SECONDS}


class CheckService:
    """Answers checks: here from the local stores, or by the owner of the partition."""

    def __init__(self, settings: Settings, router: Router, processor: StreamThread) -> None:
        self.settings = settings
        self.router = router
        self.processor = processor
        self.owners = Owners(settings)
        self.own_url = kafka_clients.advertised_url(settings)
        self.session: aiohttp.ClientSession | None = None

    def local(self, document: dict[str, Any], head: str | None) -> Preview | dict[str, Any]:
        try:
            return self.router.preview(document, self.processor.reader, time.time(), head)
        except Exception as exc:  # a store closed under us: its partition is moving
            log.info("check not answered here (%s)", type(exc).__name__,
                     extra={"event": "check_moving"})
            return unavailable("the recipient's partition is moving between workers")

    async def answer(self, documents: list[dict[str, Any]], heads: list[str | None],
                     forwarded: bool, token: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(documents)
        remote: dict[str, list[tuple[int, str | None]]] = {}
        for index, (document, head) in enumerate(zip(documents, heads, strict=True)):
            found = self.local(document, head)
            if isinstance(found, dict):
                results[index] = found
            elif found.record is not None:
                results[index] = found.record
            elif found.moving or forwarded or found.partition is None:
                results[index] = unavailable("the recipient's owner is changing")
            else:
                url = await self.owners.url_of(found.partition)
                if url is None or url == self.own_url:
                    results[index] = unavailable(
                        f"partition {found.partition} has no owner now (rebalancing or "
                        "restoring)")
                else:
                    remote.setdefault(url, []).append((index, found.head))
        for url, items in remote.items():
            answers = await self.forward(url, [documents[i] for i, _ in items],
                                         [head for _, head in items], token)
            for (index, _), answer in zip(items, answers, strict=True):
                results[index] = answer
        return [result or unavailable("not answered") for result in results]

    async def forward(self, url: str, documents: list[dict[str, Any]],
                      heads: list[str | None], token: str) -> list[dict[str, Any]]:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS))
        try:
            async with self.session.post(
                    f"{url}/v1/check", data=orjson.dumps(documents),
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json",
                             FORWARDED: orjson.dumps(heads).decode()}) as response:
                body = orjson.loads(await response.read())
                if response.status == 200 and isinstance(body, dict) \
                        and len(body.get("results", ())) == len(documents):
                    return list(body["results"])
                reason = body.get("error") if isinstance(body, dict) else None
                return [unavailable(f"the owner answered {response.status}: {reason}")
                        ] * len(documents)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            return [unavailable(f"the owner at {url} did not answer ({type(exc).__name__})")
                    ] * len(documents)


def register(app: faust.App, settings: Settings, router: Router, processor: StreamThread,
             metrics: GateMetrics) -> None:
    service = CheckService(settings, router, processor)
    openapi = orjson.loads((contracts.schemas_dir() / "openapi.json").read_bytes())

    @app.page("/v1/openapi.json")
    class OpenAPI(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi)

    @app.page("/v1/check")
    class Check(View):
        async def post(self, request: Request) -> Response:
            started = time.monotonic()
            status, body = await self.handle(request)
            metrics.api_requests.labels("check", str(status)).inc()
            metrics.api_latency.labels("check").observe(time.monotonic() - started)
            headers = {"Retry-After": str(RETRY_SECONDS)} if status == 503 else None
            return self.json(body, status=status, headers=headers)

        async def handle(self, request: Request) -> tuple[int, Any]:
            refusal = bearer_refusal(request, settings.api_token)
            if refusal is not None:
                return 401, {"error": refusal}
            try:
                documents, batch = await read_messages(request)
                heads = parse_heads(request.headers.get(FORWARDED), len(documents))
            except Refused as refused:
                return refused.status, {"error": refused.reason}
            forwarded = FORWARDED in request.headers
            results = await service.answer(documents, heads, forwarded,
                                           settings.api_token or "")
            if batch or forwarded:
                return 200, {"results": results}
            result = results[0]
            if result.get("status") == 503:
                return 503, result
            return 200, result


def parse_heads(header: str | None, count: int) -> list[str | None]:
    if header is None:
        return [None] * count
    try:
        heads = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"{FORWARDED} is not a JSON list") from exc
    if not isinstance(heads, list) or len(heads) != count \
            or not all(h is None or isinstance(h, str) for h in heads):
        raise Refused(400, f"{FORWARDED} does not match the messages")
    return heads
