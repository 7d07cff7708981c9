"""The check API: POST /v1/check answers, from live state, what the gate would decide now;
GET /v1/recipients/{tenant}/{identity} what the gate knows of one user (why it decides so).

Any worker answers any request. The state of a user lives with the worker that owns the
user's partition (Kafka Streams calls this an interactive query): a worker that does not own it
finds the owner in the route group's description (each member's client id carries its URL,
processors.runtime.kafka_clients.route_consumer) and forwards the request there, once. While
partitions move or a store restores there is no owner to ask: 503 with Retry-After. A check
records nothing: no state change, no de-duplication entry, no budget used.

Requests carry `Authorization: Bearer <OUTBOUND_GATE_API_TOKEN>`; bodies are one outbound
message (the outbound contract) or a list of at most 1,000. A tenant the gate does not know
(no template in the catalog, no policy override, not in the tenant map) is refused with 400:
a typo would otherwise get answers about nobody. No number or BSUID is logged or used as a
metric label (neither web server keeps an access log, so paths are not logged either).

The routes are served by the process that answers checks: with the RocksDB store the query
server (processors.runtime.query_server), a process of its own reading the worker's stores as
a RocksDB secondary, so that checks never take the stream thread's GIL; with the memory store
the worker's own web server.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

from processors.core import contracts
from processors.core.decode import DecodeError, decode
from processors.core.enrich import parse_recipient
from processors.runtime import catalog, kafka_clients
from processors.runtime.catalog import CatalogReplica
from processors.runtime.gate.preview import Preview, Previews, StateReader
from processors.runtime.metrics import ApiMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_BATCH = 1000
RETRY_SECONDS = 1
OWNERS_TTL_SECONDS = 2.0
FORWARDED = "X-Outbound-Gate-Forwarded"  # value: JSON list of head identities (or nulls)
FORWARD_TIMEOUT_SECONDS = 5.0


# RFC 9457 problem types: stable, one per kind of error (schemas/openapi.json, Problem).
PROBLEM_TYPE = "urn:outbound-gate:problem:"
PROBLEM_TITLES = {
    "unauthorized": "Not authorised",
    "invalid-request": "Not a valid request",
    "unknown-tenant": "Unknown tenant",
    "invalid-identity": "Not a phone number or business-scoped user ID",
    "too-large": "Request too large",
    "unavailable": "No answer now",
}
PROBLEM_JSON = "application/problem+json"


def problem(kind: str, status: int, detail: str) -> dict[str, Any]:
    """An error body (RFC 9457): type and title per kind, the status, one line of detail."""
    return {"type": PROBLEM_TYPE + kind, "title": PROBLEM_TITLES[kind], "status": status,
            "detail": detail}


class Refused(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind or ("too-large" if status == 413 else "invalid-request")

    def body(self) -> dict[str, Any]:
        return problem(self.kind, self.status, self.reason)


class Owners:
    """Partition -> URL of the worker that owns it, from the route group's description
    (cached briefly; asked again when a partition has no owner in it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group = settings.route_group
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


def bearer_refusal(request: web.BaseRequest, token: str | None) -> str | None:
    if not token:
        return "the check API is off: OUTBOUND_GATE_API_TOKEN is not set on this worker"
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return "missing 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(value.strip().encode(), token.encode()):
        return "wrong API token"
    return None


class Tenants:
    """The tenants the gate knows: the catalog's, the policy's overrides, the tenant map's."""

    def __init__(self, settings: Settings, holder: PolicyHolder, table: CatalogReplica) -> None:
        self.settings, self.holder, self.table = settings, holder, table
        self.known: frozenset[str] = frozenset()
        self.at = -1.0

    def __contains__(self, tenant: object) -> bool:
        if tenant in self.known or tenant in self.holder.current.tenants \
                or tenant in self.settings.tenant_map.values():
            return True
        # A template added since the last look: look again, at most once a second.
        if time.monotonic() - self.at > 1.0:
            self.known, self.at = catalog.tenants(self.table), time.monotonic()
            return tenant in self.known
        return False


async def read_messages(request: web.BaseRequest) -> tuple[list[dict[str, Any]], bool]:
    """The body's outbound messages, validated; and whether it was a list."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
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
    return {**problem("unavailable", 503, reason), "retry_after_seconds": RETRY_SECONDS}


# One lookup of one item here: a Preview (an answer, or the partition whose owner can answer).
Look = Callable[[Any, str | None], Preview]
# Forward items to the owner at a URL with their heads: one answer per item.
Forward = Callable[[str, list[Any], list[str | None]], Awaitable[list[dict[str, Any]]]]


class CheckService:
    """Answers checks and recipient questions: here from the local stores, or by the owner of
    the partition."""

    def __init__(self, settings: Settings, previews: Previews) -> None:
        self.settings = settings
        self.previews = previews
        self.owners = Owners(settings)
        self.own_url = kafka_clients.advertised_url(settings)
        self.session: aiohttp.ClientSession | None = None

    def check_here(self, read: StateReader, document: dict[str, Any], head: str | None
                   ) -> Preview:
        return self.previews.preview(document, read, time.time(), head)

    def recipient_here(self, read: StateReader, who: tuple[str, str], head: str | None
                       ) -> Preview:
        return self.previews.recipient(who[0], who[1], read, time.time(), head)

    async def answer(self, items: list[Any], heads: list[str | None], forwarded: bool,
                     look: Look, forward: Forward) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(items)
        remote: dict[str, list[tuple[int, str | None]]] = {}
        for index, (item, head) in enumerate(zip(items, heads, strict=True)):
            try:
                found = look(item, head)
            except Exception as exc:  # a store closed under us: its partition is moving
                log.info("not answered here (%s)", type(exc).__name__,
                         extra={"event": "check_moving"})
                results[index] = unavailable("the recipient's partition is moving between "
                                             "workers")
                continue
            if found.record is not None:
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
        for url, pending in remote.items():
            answers = await forward(url, [items[i] for i, _ in pending],
                                    [head for _, head in pending])
            for (index, _), answer in zip(pending, answers, strict=True):
                results[index] = answer
        return [result or unavailable("not answered") for result in results]

    async def forward_checks(self, token: str, url: str, documents: list[Any],
                             heads: list[str | None]) -> list[dict[str, Any]]:
        answers = await self.ask(url, "POST", "/v1/check", orjson.dumps(documents), heads,
                                 token)
        if isinstance(answers, list) and len(answers) == len(documents):
            return answers
        return [answers if isinstance(answers, dict) else unavailable("no answer")
                ] * len(documents)

    async def forward_recipient(self, token: str, url: str, who: list[Any],
                                heads: list[str | None]) -> list[dict[str, Any]]:
        tenant, identity = who[0]
        path = f"/v1/recipients/{quote(tenant, safe='')}/{quote(identity, safe='')}"
        answer = await self.ask(url, "GET", path, None, heads, token)
        return [answer if isinstance(answer, dict) else unavailable("no answer")]

    async def ask(self, url: str, method: str, path: str, body: bytes | None,
                  heads: list[str | None], token: str) -> list[dict[str, Any]] | dict[str, Any]:
        """One forwarded request: the owner's results (a list), or one answer for all (a
        503 when the owner did not answer as it should)."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS))
        try:
            async with self.session.request(
                    method, f"{url}{path}", data=body,
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json",
                             FORWARDED: orjson.dumps(heads).decode()}) as response:
                answer = orjson.loads(await response.read())
                if response.status == 200 and isinstance(answer, dict):
                    results = answer.get("results")
                    return list(results) if isinstance(results, list) else answer
                # "error": what a worker of an earlier version answers, during a roll-out.
                reason = (answer.get("detail") or answer.get("error")
                          if isinstance(answer, dict) else None)
                if response.status in (400, 404) and isinstance(answer, dict):
                    return answer if "type" in answer else problem(
                        "invalid-request", response.status, str(reason))
                return unavailable(f"the owner answered {response.status}: {reason}")
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            return unavailable(f"the owner at {url} did not answer ({type(exc).__name__})")


Ready = Callable[[], bool]


def routes(settings: Settings, previews: Previews, readers: Callable[[], StateReader],
           metrics: ApiMetrics, holder: PolicyHolder, table: CatalogReplica,
           ready: Ready) -> list[web.RouteDef]:
    """The check API's routes, for the aiohttp application of the process that answers: the
    worker's (Faust's web server) or the query server's. readers() gives, per request, the
    committed state of the partitions answered here; ready() says the catalog and the
    policy have been read (until then every tenant would look unknown)."""
    service = CheckService(settings, previews)
    tenants = Tenants(settings, holder, table)
    openapi = orjson.dumps(contracts.openapi_document())
    requests = {(endpoint, status): metrics.requests.labels(endpoint, str(status))
                for endpoint in ("check", "recipients") for status in (200, 400, 401, 413, 503)}
    latencies = {endpoint: metrics.latency.labels(endpoint)
                 for endpoint in ("check", "recipients")}
    token = settings.api_token or ""

    def respond(endpoint: str, started: float, status: int, body: Any) -> web.Response:
        counter = requests.get((endpoint, status))
        (counter or metrics.requests.labels(endpoint, str(status))).inc()
        latencies[endpoint].observe(time.monotonic() - started)
        return web.Response(body=orjson.dumps(body), status=status, charset="utf-8",
                            content_type="application/json" if status == 200 else PROBLEM_JSON,
                            headers={"Retry-After": str(RETRY_SECONDS)} if status == 503
                            else None)

    def refused(request: web.BaseRequest) -> tuple[int, Any] | None:
        refusal = bearer_refusal(request, settings.api_token)
        if refusal is not None:
            return 401, problem("unauthorized", 401, refusal)
        if not ready():
            return 503, unavailable("the worker is starting: the template catalog or the "
                                    "policy is not read yet")
        return None

    async def openapi_document(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json", charset="utf-8")

    async def check(request: web.Request) -> web.Response:
        started = time.monotonic()
        return respond("check", started, *await handle_check(request))

    async def handle_check(request: web.Request) -> tuple[int, Any]:
        refusal = refused(request)
        if refusal is not None:
            return refusal
        try:
            documents, batch = await read_messages(request)
            heads = parse_heads(request.headers.get(FORWARDED), len(documents))
            for index, document in enumerate(documents):
                if document["tenant_id"] not in tenants:
                    where = f"message {index}: " if batch else ""
                    raise Refused(400, f"{where}unknown tenant_id {document['tenant_id']!r}",
                                  "unknown-tenant")
        except Refused as bad:
            return bad.status, bad.body()
        forwarded = FORWARDED in request.headers
        results = await service.answer(
            documents, heads, forwarded, partial(service.check_here, readers()),
            lambda url, items, item_heads: service.forward_checks(token, url, items,
                                                                  item_heads))
        if batch or forwarded:
            return 200, {"results": results}
        result = results[0]
        return int(result.get("status", 200)), result

    async def recipient(request: web.Request) -> web.Response:
        started = time.monotonic()
        return respond("recipients", started, *await handle_recipient(request))

    async def handle_recipient(request: web.Request) -> tuple[int, Any]:
        refusal = refused(request)
        if refusal is not None:
            return refusal
        tenant, identity = request.match_info["tenant"], request.match_info["identity"]
        try:
            heads = parse_heads(request.headers.get(FORWARDED), 1)
        except Refused as bad:
            return bad.status, bad.body()
        if tenant not in tenants:
            return 400, problem("unknown-tenant", 400, f"unknown tenant_id {tenant!r}")
        parsed = parse_recipient(identity)
        if parsed.identity is None:  # its problem names no digits
            return 400, problem("invalid-identity", 400,
                                "the identity is neither a valid phone number (E.164) "
                                "nor a valid business-scoped user ID")
        results = await service.answer(
            [(tenant, parsed.identity)], heads, FORWARDED in request.headers,
            partial(service.recipient_here, readers()),
            lambda url, items, item_heads: service.forward_recipient(token, url, items,
                                                                     item_heads))
        return int(results[0].get("status", 200)), results[0]

    # Straight on aiohttp, not as Faust Views: Faust's dispatch and web sensors were about an
    # eighth of a check's CPU (ee3fbef:docs/performance.md, "Check API under load"), and the query
    # server has no Faust. The gate's own metrics count each request above.
    return [web.get("/v1/openapi.json", openapi_document), web.post("/v1/check", check),
            web.get("/v1/recipients/{tenant}/{identity}", recipient)]


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
