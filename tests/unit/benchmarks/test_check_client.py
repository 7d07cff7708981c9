"""The check benchmark's client: raw keep-alive HTTP/1.1, open loop, against a loopback server."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.benchmarks.check_api import ClientLoop, request_bytes

TOKEN = "t0ken"


def server_app(seen: list[tuple[str, bytes]]) -> web.Application:
    """Answers a check with a preview of its body's decision; `"decision": "close"` is answered
    with a 503 and the connection closed, `"decision": "hang"` after a second."""

    async def check(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.headers.get("Authorization", ""), body))
        decision = orjson.loads(body)["decision"]
        if decision == "hang":  # longer than the client waits
            await asyncio.sleep(1.0)
        if decision == "close":
            return web.Response(status=503, body=b'{"error": "restoring"}',
                                headers={"Connection": "close"})
        return web.Response(body=orjson.dumps({"preview": True, "decision": decision}),
                            content_type="application/json")

    app = web.Application()
    app.add_routes([web.post("/v1/check", check)])
    return app


def run_client(bodies: list[bytes], body: Any) -> tuple[list[tuple[str, bytes]], Any]:
    seen: list[tuple[str, bytes]] = []
    parent, child = multiprocessing.Pipe()

    async def main() -> Any:
        async with TestServer(server_app(seen), host="127.0.0.1") as server:
            client = ClientLoop(child, TOKEN, bodies, connections=2)
            client.loop = asyncio.get_running_loop()
            await client.target(f"http://127.0.0.1:{server.port}")
            result = await body(client, parent)
            for connection in client.pool:
                assert connection.transport is not None
                connection.transport.close()
            return result

    result = asyncio.run(main())
    parent.close()
    child.close()
    return seen, result


def test_request_is_a_complete_http_request() -> None:
    request = request_bytes("h:1", "tok", b'{"a": 1}')
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/check HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer tok" in head
    assert b"\r\nContent-Length: 8" in head
    assert body == b'{"a": 1}'


def test_warm_sends_every_check_on_kept_alive_connections() -> None:
    bodies = [orjson.dumps({"decision": d}) for d in ("accepted", "rejected")]

    async def body(client: ClientLoop, parent: Any) -> Any:
        pool = list(client.pool)
        result = await client.warm(40)
        return result, client.out, pool == client.pool

    seen, (result, out, same_pool) = run_client(bodies, body)
    assert result == {"sent": 40, "statuses": {200: 40}}
    assert [o[4] for o in out].count("accepted") == 20
    assert [o[4] for o in out].count("rejected") == 20
    assert same_pool  # no connection was opened again
    assert {auth for auth, _ in seen} == {f"Bearer {TOKEN}"}
    assert len(seen) == 40


def test_paced_is_open_loop_and_records_every_answer() -> None:
    bodies = [orjson.dumps({"decision": "accepted"}), orjson.dumps({"decision": "close"})]

    async def body(client: ClientLoop, parent: Any) -> Any:
        stop = asyncio.get_running_loop().call_later(0.5, parent.send, ("stop",))
        # The client tells the parent it started; the parent's end is not read here.
        result = await client.paced(200.0, 5.0)
        stop.cancel()
        return result

    seen, result = run_client(bodies, body)
    samples = result["samples"]
    assert 60 <= len(samples) <= 140  # ~100 due in 0.5 s at 200/s
    assert len(seen) == len(samples)
    outcomes = [s[4] for s in samples]
    assert outcomes.count("accepted") >= len(samples) // 2 - 1
    assert set(outcomes) == {"accepted", "http_503"}  # closed connections were replaced
    dues = [s[0] for s in samples]
    assert max(dues) - min(dues) < 0.7
    for _, latency, service, status, _ in samples:
        assert latency >= service >= 0
        assert status in (200, 503)


def test_an_unanswered_check_times_out_and_its_connection_is_replaced(
        monkeypatch: Any) -> None:
    monkeypatch.setattr("tests.benchmarks.check_api.CHECK_TIMEOUT_SECONDS", 0.2)
    bodies = [orjson.dumps({"decision": "hang"}), orjson.dumps({"decision": "accepted"})]

    async def body(client: ClientLoop, parent: Any) -> Any:
        result = await client.warm(4)
        return result, client.out, [c.closed for c in client.pool]

    _, (result, out, closed) = run_client(bodies, body)
    assert result["sent"] == 4
    assert sorted(o[4] for o in out) == ["TimeoutError", "TimeoutError", "accepted", "accepted"]
    assert not any(closed)


def test_a_stop_that_comes_after_the_run_ended_by_itself_is_ignored() -> None:
    # The run ended at max_seconds and said done; the parent's stop crossed it on the pipe.
    parent, child = multiprocessing.Pipe()
    parent.send(("stop",))
    parent.send(("quit",))
    asyncio.run(asyncio.wait_for(ClientLoop(child, TOKEN, [], connections=1).serve(), 10))
    assert parent.recv() == ("ready",)
    assert not parent.poll()  # nothing else said: the stray stop started nothing
    parent.close()
    child.close()
