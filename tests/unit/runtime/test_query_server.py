"""The query server without a broker: secondary reads of the worker's stores (committed state,
as of the request), the partitions the worker announces, the passing on of every other path
to the worker's web server, /metrics and /readyz joined, and its stop when the worker goes."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging.config
import multiprocessing
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processors.core.policy import state as st
from processors.core.timeutil import format_rfc3339
from processors.runtime import gc_pauses, query_server
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.state_store import PartitionStore, open_store, reset
from processors.runtime.gate import recipient_state
from processors.runtime.metrics import ApiMetrics, GateMetrics
from processors.runtime.query_server import (
    QueryProcess,
    Replicas,
    joined_exposition,
    readiness,
    store_dirs,
)
from processors.settings import Settings
from tests.factories import message, template_entry

TOKEN = "unit-token"
NUMBER = "+14165550123"
KEY = f"acme:{NUMBER}"
PARTITIONS = 4
HOME = partition_for(KEY, PARTITIONS)  # the partition that holds the number's state


def settings_for(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path), app_id="unit", partitions=PARTITIONS,
                    api_token=TOKEN)


def primary(settings: Settings, partition: int) -> PartitionStore:
    """The worker's store of a partition, where the route loop keeps it."""
    return open_store("rocksdb", store_dirs(settings)[0], partition)


def commit_inbound(store: PartitionStore, at: float) -> None:
    """As the route loop does: the change pending, then committed."""
    recipient_state.save(store, KEY, st.with_inbound(st.EMPTY, at))
    store.committed(store.checkpoint() + 1)


def test_a_request_reads_what_was_committed_before_it_and_never_pending_changes(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = primary(settings, HOME)
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=0)
    replicas.update(1, [HOME])
    read = replicas.reader()
    loader = read(HOME)
    assert loader is not None and loader(KEY) == st.EMPTY
    recipient_state.save(store, KEY, st.with_inbound(st.EMPTY, 1000.0))  # pending only
    assert replicas.reader()(HOME)(KEY) == st.EMPTY  # type: ignore[misc]
    store.committed(1)
    assert loader(KEY) == st.EMPTY, "a request saw a commit after its first read"
    later = replicas.reader()(HOME)
    assert later is not None and st.last_inbound(later(KEY), 1001.0) == 1000.0
    store.close()
    replicas.close()


def test_a_partition_is_caught_up_at_most_once_per_interval(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = primary(settings, HOME)
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=3600)
    replicas.update(1, [HOME])
    assert replicas.reader()(HOME)(KEY) == st.EMPTY  # type: ignore[misc]
    commit_inbound(store, 1000.0)
    assert replicas.reader()(HOME)(KEY) == st.EMPTY, "caught up within the interval"  # type: ignore[misc]
    replicas.caught_up_at[HOME] -= 3600  # the interval has passed
    assert replicas.reader()(HOME)(KEY) != st.EMPTY  # type: ignore[misc]
    store.close()
    replicas.close()


def test_only_the_announced_partitions_are_read(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    stores = [primary(settings, p) for p in range(PARTITIONS)]
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=0)
    assert replicas.reader()(0) is None  # nothing announced yet
    replicas.update(1, [0, 2])
    read = replicas.reader()
    assert [read(p) is not None for p in range(PARTITIONS)] == [True, False, True, False]
    replicas.update(2, [])  # released: revoked, lost or closed
    assert replicas.partitions == [] and replicas.reader()(0) is None
    replicas.update(3, [1])
    replicas.update(3, [0, 1, 2, 3])  # the same change again: already applied
    assert replicas.partitions == [1]
    for store in stores:
        store.close()
    replicas.close()


def test_a_partition_whose_store_is_gone_is_not_read(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = primary(settings, 0)
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=0)
    replicas.update(1, [0, 1])  # the worker released 1 (and removed it) before we opened it
    assert replicas.partitions == [0]
    store.close()
    replicas.close()


def test_a_reset_store_is_read_afresh_after_it_is_announced_again(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = primary(settings, HOME)
    commit_inbound(store, 1000.0)
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=0)
    replicas.update(1, [HOME])
    loader = replicas.reader()(HOME)
    assert loader is not None and loader(KEY) != st.EMPTY
    replicas.update(2, [])
    store.close()
    store = primary(settings, HOME)
    reset(store)  # the changelog was recreated: the worker starts the partition empty
    replicas.update(3, [HOME])
    loader = replicas.reader()(HOME)
    assert loader is not None and loader(KEY) == st.EMPTY
    store.close()
    replicas.close()


def test_the_exposition_joined_holds_each_family_once() -> None:
    worker, own = CollectorRegistry(), CollectorRegistry()
    GateMetrics(worker, 10).decisions.labels("acme", "accepted", "UTILITY", "none").inc()
    ApiMetrics(own).requests.labels("check", "200").inc()
    text = joined_exposition(generate_latest(worker).rstrip(b"\n"), generate_latest(own))
    names = [family.name for family in text_string_to_metric_families(text.decode())]
    assert len(names) == len(set(names))
    assert {"outbound_gate_decisions", "outbound_gate_api_requests"} <= set(names)


def test_ready_only_when_the_query_server_is_too() -> None:
    worker = {"ready": True, "assigned": [0, 2]}
    caught_up = {"catalog_caught_up": True, "policy_caught_up": True}
    assert readiness(200, worker, caught_up, [0, 2])[0] == 200
    status, body = readiness(200, worker, caught_up, [0])  # not told of 2 yet
    assert status == 503 and body["ready"] is False and body["query_server"]["ready"] is False
    status, body = readiness(200, worker, {**caught_up, "policy_caught_up": False}, [0, 2])
    assert status == 503 and body["query_server"]["policy_caught_up"] is False
    assert readiness(503, {**worker, "ready": False}, caught_up, [0, 2])[0] == 503


def worker_app() -> web.Application:
    """A stand-in for Faust's web server: what the query server passes requests on to."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "path": request.raw_path,
                                  "body": (await request.read()).decode(),
                                  "token": request.headers.get("X-Token")},
                                 status=202, headers={"X-Worker": "yes"})

    async def metrics(request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        GateMetrics(registry, 10)
        return web.Response(body=generate_latest(registry),
                            content_type="text/plain", charset="utf-8")

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "assigned": [HOME]})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/readyz", ready),
                    web.route("*", "/{path:.*}", echo)])
    return app


def served(tmp_path: Path, body: Callable[[TestClient[Any, Any], QueryProcess,
                                           PartitionStore], Awaitable[None]]) -> None:
    """body(client of the query server, the query server, the worker's store of HOME), with
    the worker's web server faked and its store real."""
    async def run() -> None:
        worker = TestServer(worker_app())
        await worker.start_server()
        settings = settings_for(tmp_path)
        store = primary(settings, HOME)
        reader, writer = multiprocessing.Pipe(duplex=False)
        process = QueryProcess(settings, str(worker.make_url("")), reader, 0)
        process.replicas.catch_up_seconds = 0  # every request sees the latest commit
        entry = template_entry("notice", "UTILITY")
        process.catalog.data["acme:notice:en_US"] = (entry,)
        process.catalog.caught_up = process.holder.caught_up = True
        client = TestClient(TestServer(process.application()))
        await client.start_server()
        try:
            await body(client, process, store)
        finally:
            await client.close()
            await process.proxy.close()
            process.replicas.close()
            await worker.close()
            store.close()
            writer.close()

    asyncio.run(run())


def test_other_paths_pass_to_the_worker_unchanged(tmp_path: Path) -> None:
    async def body(client: TestClient[Any, Any], process: QueryProcess,
                   store: PartitionStore) -> None:
        response = await client.post("/catalog/a%2Fb%2B1?x=1", data=b"payload",
                                     headers={"X-Token": "kept"})
        assert response.status == 202 and response.headers["X-Worker"] == "yes"
        assert await response.json() == {"method": "POST", "path": "/catalog/a%2Fb%2B1?x=1",
                                         "body": "payload", "token": "kept"}
        response = await client.get("/metrics")
        text = await response.text()
        names = [f.name for f in text_string_to_metric_families(text)]
        assert len(names) == len(set(names)) and "outbound_gate_api_requests" in names
        assert "outbound_gate_decisions" in names
        response = await client.get("/readyz")
        assert response.status == 503, "ready before it was told of the worker's partitions"
        process.received(("partitions", 1, (HOME,)))
        response = await client.get("/readyz")
        assert response.status == 200 and (await response.json())["query_server"]["ready"]

    served(tmp_path, body)


def test_checks_are_answered_from_the_workers_committed_state(tmp_path: Path) -> None:
    async def body(client: TestClient[Any, Any], process: QueryProcess,
                   store: PartitionStore) -> None:
        now = time.time()
        free_form = message(message_id="q-1", recipient=NUMBER, kind="free_form",
                            template=None, created_at=format_rfc3339(now))
        auth = {"Authorization": f"Bearer {TOKEN}"}

        async def decision() -> tuple[int, Any]:
            response = await client.post("/v1/check", data=orjson.dumps(free_form),
                                         headers=auth)
            return response.status, await response.json()

        process.received(("partitions", 1, tuple(p for p in range(PARTITIONS)
                                                 if p != HOME)))
        status, answer = await decision()  # not readable here, and no owner known elsewhere
        assert status == 503 and answer["retry_after_seconds"] == 1
        process.received(("partitions", 2, (HOME,)))
        status, answer = await decision()
        assert status == 200 and answer["error_code"] == "OUTSIDE_SERVICE_WINDOW", answer
        commit_inbound(store, now - 60)  # the worker commits an inbound message
        status, answer = await decision()
        assert status == 200 and answer["decision"] == "accepted", answer
        response = await client.get(f"/v1/recipients/acme/%2B{NUMBER[1:]}", headers=auth)
        assert response.status == 200
        assert (await response.json())["service_window"]["open_until"] is not None
        process.catalog.caught_up = False  # a restarted query server, reading the catalog
        assert (await decision())[0] == 503
        scrape = await (await client.get("/metrics")).text()
        assert 'outbound_gate_api_requests_total{endpoint="check",status="200"} 2.0' in scrape
        assert NUMBER[1:] not in scrape

    served(tmp_path, body)


def test_the_query_server_stops_when_the_workers_end_of_the_pipe_closes(
        tmp_path: Path) -> None:
    # No broker: its followers retry in the background; it serves all the same.
    settings = dataclasses.replace(settings_for(tmp_path), bootstrap_servers="127.0.0.1:9",
                                   web_port=query_server.loopback_port())
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=query_server.serve,
                            args=(settings, "http://127.0.0.1:9", reader, os.getpid()),
                            daemon=True)
    child.start()
    reader.close()
    try:
        wait_for(lambda: answers(settings.web_port), 60, "the query server to listen")
        writer.close()  # as when the worker dies
        child.join(30)
        assert child.exitcode == 0, f"the query server did not stop: {child.exitcode}"
    finally:
        if child.is_alive():
            child.kill()


def test_a_message_from_the_worker_after_the_server_stopped_is_let_go(tmp_path: Path) -> None:
    # The worker's partitions announced after SIGTERM closed the query server's loop: its pipe
    # thread must end quietly, not print a traceback (a chaos run caught one).
    async def run() -> None:
        reader, writer = multiprocessing.Pipe(duplex=False)
        process = QueryProcess(settings_for(tmp_path), "http://127.0.0.1:9", reader, 0)
        closed = asyncio.new_event_loop()
        closed.close()
        errors: list[BaseException] = []
        previous = threading.excepthook
        threading.excepthook = lambda args: errors.append(args.exc_value or Exception())
        try:
            writer.send(("partitions", [HOME], {}))
            thread = threading.Thread(target=process.listen, args=(closed,), daemon=True)
            thread.start()
            thread.join(30)
            assert not thread.is_alive(), "the pipe thread did not end"
            assert errors == []
        finally:
            threading.excepthook = previous
            await process.proxy.close()
            process.replicas.close()
            writer.close()

    asyncio.run(run())


def answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except urllib.error.HTTPError as exc:
        return bool(exc.code == 503)  # the (absent) worker's web server did not answer
    except OSError:
        return False
    return True


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)  # pacing between polls of a condition with a deadline


@pytest.mark.parametrize("freeze", [True, False])
def test_the_query_server_freezes_what_survives_its_full_collections_unless_told_not_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, freeze: bool) -> None:
    # Its parse caches fill as the worker's do: a full collection must not walk them each time
    # (OUTBOUND_GATE_GC_FREEZE, on by default).
    seen: list[bool] = []

    async def run(self: QueryProcess) -> None:
        seen.append(gc_pauses.installed())

    monkeypatch.setattr(QueryProcess, "run", run)
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    monkeypatch.setattr(signal, "signal", lambda number, handler: None)
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        settings = dataclasses.replace(settings_for(tmp_path), gc_freeze=freeze)
        query_server.serve(settings, "http://127.0.0.1:9", reader, os.getpid())
        assert seen == [freeze]
    finally:
        writer.close()
        if gc_pauses.installed():
            gc.callbacks.remove(gc_pauses._freeze_survivors)
        gc.unfreeze()


def test_stale_partitions_are_caught_up_between_requests(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    stores = [primary(settings, p) for p in (HOME, HOME + 1)]
    replicas = Replicas(*store_dirs(settings), catch_up_seconds=3600)
    replicas.update(1, [HOME, HOME + 1])
    assert replicas.catch_up_stale() == 2  # never caught up since they were opened
    assert replicas.catch_up_stale() == 0  # both within the interval
    commit_inbound(stores[0], 1000.0)
    replicas.caught_up_at[HOME] -= 3600  # HOME's interval has passed, not the other's
    assert replicas.catch_up_stale() == 1
    # A request within the interval reads what the catch-up between requests read.
    loader = replicas.reader()(HOME)
    assert loader is not None and st.last_inbound(loader(KEY), 1001.0) == 1000.0
    for store in stores:
        store.close()
    replicas.close()
