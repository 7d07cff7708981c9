"""The query server: the check API answered in a process of its own, a read replica of the
worker's stores (Kafka Streams calls these reads interactive queries).

Why a process: answered on the worker's event loop, every check takes the GIL the stream thread
needs. Here checks have an interpreter, and a GIL, of their own: what that pays and costs, side
by side, is in docs/performance.md ("Knobs and their risks", OUTBOUND_GATE_QUERY_SERVER).

- **The port.** The query server owns the worker's HTTP port (OUTBOUND_GATE_WEB_HOST/PORT) and
  answers /v1/check, /v1/recipients and /v1/openapi.json itself; Faust's web server listens on
  a loopback port of its own and the query server passes every other path to it unchanged
  (/healthz, /readyz, /catalog, /metrics), so users, probes and other workers still see one
  port, and the URL the worker advertises in the route group stays that port. /metrics is the
  worker's families followed by the query server's (the check API's, which live only here);
  /readyz says 503 until the query server is ready as well.
- **State.** Each partition the worker holds is opened as a RocksDB secondary instance of the
  worker's store (state_store.SecondaryBackend). The worker writes only committed state to
  RocksDB, so the secondary sees committed state only; a request catches each partition it
  reads up with the primary first (tens of microseconds; at most every CATCH_UP_SECONDS), and
  between requests a task catches up the partitions no request has (KEEP_CAUGHT_UP_SECONDS).
  The worker tells the query server over a pipe which partitions are
  readable (assigned and restored) and when they stop being so (revoked, lost, closed; a
  store reset happens while restoring, before a partition is readable again): the query
  server answers only for those, else as any worker does for a partition it does not hold
  (forward to the owner, or 503 while the partition moves).
- **Catalog and policy.** The query server follows the catalog changelog and the policy topic
  itself (processors.runtime.feed), as the worker does, and answers 503 until both are read.
- **Lifecycle.** Started (spawned: no state of the worker's is inherited) and stopped with the
  worker; started again, after a pause, when it dies. It stops when the pipe from the worker
  closes or the worker's process id changes, so it never outlives the worker.

With the memory store (nothing another process can open) or OUTBOUND_GATE_QUERY_SERVER=false
the worker answers the check API itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from math import inf
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from mode import Service
from prometheus_client import CollectorRegistry, generate_latest
from yarl import URL

from processors.core.policy import RecipientState, load_policy
from processors.runtime import check_api, feed, gc_pauses
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.state_store import PartitionStore, SecondaryBackend, rocks_path
from processors.runtime.gate import recipient_state
from processors.runtime.gate.preview import Previews, StateReader
from processors.runtime.logs import logging_config
from processors.runtime.metrics import ApiMetrics, GateMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

log = logging.getLogger(__name__)

RESTART_SECONDS = (1.0, 30.0)  # pause before starting a dead query server again: first, most
STOP_SECONDS = 10.0  # a query server that has not stopped by then is killed
PARENT_CHECK_SECONDS = 1.0  # how often the query server looks whether the worker still runs
PROXY_TIMEOUT_SECONDS = 30.0  # a /metrics scrape of a busy worker can take a while
# A partition is caught up with the worker's store at most this often: caught up for every
# request, catching up was a fifth of the query server's CPU at 500 checks/s beside a busy
# stream (ee3fbef:docs/performance.md, "Check API under load"). A check may then miss what the
# worker committed in the last 50 ms: it races with the stream anyway.
CATCH_UP_SECONDS = 0.05
# Between requests each partition is caught up at most this often: a request after a quiet
# spell then replays at most this much of the worker's writes; with no checks coming the query
# server used 0.02 cores for it at 3,500 events/s (0.03-0.04 every CATCH_UP_SECONDS).
KEEP_CAUGHT_UP_SECONDS = 0.25
# Not passed on between the client and the worker (RFC 9110 7.6.1), or set by aiohttp itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length"})

# worker -> query server: ("partitions", epoch, readable partition numbers) | ("stop",)
Message = tuple[Any, ...]


def enabled(settings: Settings) -> bool:
    return settings.query_server and settings.store.startswith("rocksdb")


def loopback_port() -> int:
    """A free port on 127.0.0.1 for Faust's web server (Faust wants a number, not 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def store_dirs(settings: Settings) -> tuple[Path, Path]:
    """(the route loop's store directory, the query server's secondaries' directory)."""
    app_dir = Path(settings.data_dir).resolve() / settings.app_id
    return app_dir / "route", app_dir / "query"


# ---- in the worker ----------------------------------------------------------------------------


class QueryServer(Service):
    """The worker's side: starts the query server process, tells it which partitions are
    readable, starts it again when it dies, stops it with the worker."""

    def __init__(self, settings: Settings, worker_url: str, metrics: GateMetrics,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.worker_url = worker_url
        self.metrics = metrics
        self.context = multiprocessing.get_context("spawn")
        self.process: BaseProcess | None = None
        self.pipe: Connection | None = None
        self.epoch = 0
        self.readable: tuple[int, ...] = ()
        self.stopping = False

    def partitions_changed(self, partitions: tuple[int, ...]) -> None:
        """From the stream thread: handed to the event loop, which alone writes the pipe."""
        self.loop.call_soon_threadsafe(self.tell_partitions, partitions)

    def tell_partitions(self, partitions: tuple[int, ...]) -> None:
        self.epoch += 1
        self.readable = partitions
        self.send(("partitions", self.epoch, partitions))

    def send(self, message: Message) -> None:
        if self.pipe is None:
            return
        try:
            self.pipe.send(message)
        except OSError:  # it died: the next one is told the partitions when it starts
            log.debug("query server not told %s", message[0])

    def start_process(self) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=serve, args=(self.settings, self.worker_url, reader, os.getpid()),
            name="query-server", daemon=True)
        process.start()
        reader.close()  # the child's end: once it is only the child's, our death is its EOF
        self.process, self.pipe = process, writer
        self.send(("partitions", self.epoch, self.readable))
        log.info("query server started", extra={"event": "query_server_start",
                                                 "pid": process.pid,
                                                 "web_port": self.settings.web_port})

    async def on_started(self) -> None:
        self.start_process()
        self.add_future(self.supervise())

    async def supervise(self) -> None:
        pause = RESTART_SECONDS[0]
        while True:
            process = self.process
            assert process is not None
            started = time.monotonic()
            await exited(process)
            if self.stopping or self.should_stop:
                return
            log.error("query server exited with %s: starting a new one in %.0f s",
                      process.exitcode, pause, extra={"event": "query_server_died",
                                                      "exitcode": process.exitcode})
            self.metrics.query_server_restarts.inc()
            if self.pipe is not None:
                self.pipe.close()
                self.pipe = None
            # A server that dies at once again and again is not restarted in a tight loop.
            pause = RESTART_SECONDS[0] if time.monotonic() - started > RESTART_SECONDS[1] \
                else min(pause * 2, RESTART_SECONDS[1])
            await self.sleep(pause)
            if self.should_stop:
                return
            self.start_process()

    async def on_stop(self) -> None:
        self.stopping = True
        process = self.process
        if process is None:
            return
        if process.is_alive():
            self.send(("stop",))
            try:
                await asyncio.wait_for(exited(process), STOP_SECONDS)
            except TimeoutError:
                log.warning("query server did not stop: killed",
                            extra={"event": "query_server_killed"})
                process.kill()
                await exited(process)
        process.join()
        if self.pipe is not None:
            self.pipe.close()


async def exited(process: BaseProcess) -> None:
    """Returns once the process has ended (its sentinel becomes readable)."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    sentinel = process.sentinel

    def done() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(sentinel, done)
    try:
        await ended
    finally:
        loop.remove_reader(sentinel)


# ---- in the query server ----------------------------------------------------------------------


class Replicas:
    """The worker's readable partitions, each a secondary instance of its store."""

    def __init__(self, primary_dir: Path, secondary_dir: Path,
                 catch_up_seconds: float = CATCH_UP_SECONDS) -> None:
        self.primary_dir = primary_dir
        self.secondary_dir = secondary_dir
        self.catch_up_seconds = catch_up_seconds
        self.stores: dict[int, tuple[PartitionStore, SecondaryBackend]] = {}
        self.caught_up_at: dict[int, float] = {}
        self.epoch = -1

    @property
    def partitions(self) -> list[int]:
        return sorted(self.stores)

    def update(self, epoch: int, partitions: Iterable[int]) -> None:
        """The worker's readable partitions as of its epoch-th change. Every change opens
        the partitions again: a partition released and assigned back in between may have
        been reset (its files replaced) or restored further."""
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.close()
        for partition in sorted(set(partitions)):
            try:
                backend = SecondaryBackend(rocks_path(self.primary_dir, partition),
                                           rocks_path(self.secondary_dir, partition))
            except Exception as exc:  # moved on already: the next change opens it again
                log.warning("partition %d not opened (%s: %s)", partition,
                            type(exc).__name__, exc, extra={"event": "replica_not_opened",
                                                            "partition": partition})
                continue
            self.stores[partition] = (PartitionStore(partition, backend), backend)

    def reader(self) -> StateReader:
        """One request's reader: each partition it reads is caught up with the worker's
        store before its first read (unless that was done less than catch_up_seconds ago),
        and read as of then for the rest of the request."""
        seen: set[int] = set()

        def read(partition: int) -> Callable[[str], RecipientState] | None:
            held = self.stores.get(partition)
            if held is None:
                return None
            store, backend = held
            if partition not in seen:
                seen.add(partition)
                self.catch_up(partition, backend, time.monotonic())
            return lambda key: recipient_state.load_committed(store, key)

        return read

    def catch_up_stale(self) -> int:
        """Catches up each partition not caught up within catch_up_seconds; how many. Run
        between requests, so that a request after a quiet spell does not replay everything
        the worker wrote meanwhile (at 3,500 events/s, 30 s of it made the first second of
        checks after it reach p99 100-180 ms: ee3fbef:docs/performance.md, "Check API under
        load")."""
        now = time.monotonic()
        done = 0
        for partition, (_, backend) in list(self.stores.items()):
            try:
                done += self.catch_up(partition, backend, now)
            except Exception as exc:  # moving: the next announcement opens it again
                log.debug("partition %d not caught up (%s)", partition, type(exc).__name__)
        return done

    def catch_up(self, partition: int, backend: SecondaryBackend, now: float) -> bool:
        """Catches the partition up unless that was done within catch_up_seconds."""
        if now - self.caught_up_at.get(partition, -inf) < self.catch_up_seconds:
            return False
        backend.catch_up()
        self.caught_up_at[partition] = now
        return True

    def close(self) -> None:
        for _, backend in self.stores.values():
            backend.close()
        self.stores, self.caught_up_at = {}, {}


class Proxy:
    """Passes requests on to the worker's own web server, unchanged."""

    def __init__(self, worker_url: str) -> None:
        self.worker_url = worker_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def fetch(self, request: web.BaseRequest) -> tuple[int, Mapping[str, str], bytes]:
        if self.session is None:
            # Bodies pass as they are (a compressed one stays compressed, its header too).
            self.session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT_SECONDS))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        url = URL(f"{self.worker_url}{request.raw_path}", encoded=True)  # as it came
        async with self.session.request(request.method, url, headers=headers, data=body,
                                        allow_redirects=False) as response:
            kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            return response.status, kept, await response.read()

    async def handle(self, request: web.Request) -> web.Response:
        try:
            status, headers, body = await self.fetch(request)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return starting(f"the worker's web server did not answer ({type(exc).__name__})")
        return web.Response(status=status, headers=headers, body=body)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def starting(reason: str) -> web.Response:
    return web.Response(status=503, body=orjson.dumps(check_api.unavailable(reason)),
                        content_type=check_api.PROBLEM_JSON,
                        headers={"Retry-After": str(check_api.RETRY_SECONDS)})


def joined_exposition(worker: bytes, own: bytes) -> bytes:
    """The worker's /metrics text, then this process's families (names never repeat: the
    check API's metrics live only here)."""
    if worker and not worker.endswith(b"\n"):
        worker += b"\n"
    return worker + own


def readiness(status: int, body: Any, caught_up: dict[str, bool], partitions: list[int]
              ) -> tuple[int, Any]:
    """The worker's /readyz answer, with the query server's own readiness: its catalog and
    policy read, and the partitions it reads the ones the worker holds."""
    if not isinstance(body, dict):
        return status, body
    ready = all(caught_up.values()) and partitions == body.get("assigned")
    body = {**body, "query_server": {"ready": ready, "partitions": partitions, **caught_up}}
    if status == 200 and not ready:
        return 503, {**body, "ready": False}
    return status, body


class QueryProcess:
    """What runs in the query server process."""

    def __init__(self, settings: Settings, worker_url: str, pipe: Connection,
                 parent_pid: int) -> None:
        self.settings = settings
        self.pipe = pipe
        self.parent_pid = parent_pid
        primary_dir, secondary_dir = store_dirs(settings)
        shutil.rmtree(secondary_dir, ignore_errors=True)  # a secondary keeps nothing of value
        self.replicas = Replicas(primary_dir, secondary_dir)
        self.holder = PolicyHolder(load_policy(settings.policy_file))
        self.catalog = CatalogReplica()
        self.previews = Previews(settings.partitions, self.holder, self.catalog,
                                 settings.dedup_seconds > 0)
        self.registry = CollectorRegistry()
        self.api_metrics = ApiMetrics(self.registry)
        self.proxy = Proxy(worker_url)
        self.stopped = asyncio.Event()

    def caught_up(self) -> dict[str, bool]:
        return {"catalog_caught_up": self.catalog.caught_up,
                "policy_caught_up": self.holder.caught_up}

    def application(self) -> web.Application:
        app = web.Application()
        app.add_routes(check_api.routes(
            self.settings, self.previews, self.replicas.reader, self.api_metrics, self.holder,
            self.catalog, lambda: all(self.caught_up().values())))
        app.add_routes([web.get("/metrics", self.metrics), web.get("/readyz", self.ready),
                        web.route("*", "/{path:.*}", self.proxy.handle)])
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            status, headers, body = await self.proxy.fetch(request)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return starting(f"the worker's web server did not answer ({type(exc).__name__})")
        if status == 200:
            body = joined_exposition(body, generate_latest(self.registry))
        return web.Response(status=status, headers=headers, body=body)

    async def ready(self, request: web.Request) -> web.Response:
        try:
            status, _, raw = await self.proxy.fetch(request)
            body = orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            return starting(f"the worker's web server did not answer ({type(exc).__name__})")
        status, body = readiness(status, body, self.caught_up(), self.replicas.partitions)
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json")

    def received(self, message: Message) -> None:
        if message[0] == "partitions":
            self.replicas.update(message[1], message[2])
            log.info("query server reads partitions", extra={
                "event": "query_partitions", "partitions": self.replicas.partitions})
        elif message[0] == "stop":
            self.stopped.set()

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a thread of its own: the worker's messages, until its end of the pipe closes."""
        while True:
            try:
                message: Message | None = self.pipe.recv()
            except (EOFError, OSError):
                message = None
            try:
                if message is None:
                    loop.call_soon_threadsafe(self.stopped.set)
                    return
                loop.call_soon_threadsafe(self.received, message)
            except RuntimeError:
                # The loop has closed: the server stopped (on SIGTERM, say) while the worker
                # still had something to say; no one is left to hear it.
                return

    async def watch_parent(self) -> None:
        # The pipe's end says it first; this is for a worker whose pipe end leaked elsewhere.
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(PARENT_CHECK_SECONDS)  # not a test: a watchdog's period
        self.stopped.set()

    async def keep_caught_up(self) -> None:
        while True:
            self.replicas.catch_up_stale()
            await asyncio.sleep(KEEP_CAUGHT_UP_SECONDS)  # a period, not a synchronisation

    async def sweep_frozen_objects(self) -> None:
        # As the worker: survivors of full collections are frozen (gc_pauses.install in
        # serve), and collected for good once a period.
        while True:
            await asyncio.sleep(gc_pauses.SWEEP_SECONDS)  # a period, not a synchronisation
            if gc_pauses.installed():  # OUTBOUND_GATE_GC_FREEZE
                gc_pauses.sweep()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopped.set)
        threading.Thread(target=self.listen, args=(loop,), name="worker-pipe",
                         daemon=True).start()
        settings = self.settings

        def catalog_read() -> None:
            self.catalog.caught_up = True

        def policy_read() -> None:
            self.holder.caught_up = True

        tasks = [
            asyncio.create_task(feed.follow(
                settings, settings.catalog_changelog_topic, "query-catalog",
                lambda _, record: self.catalog.apply(record.key, record.value),
                catalog_read)),
            asyncio.create_task(feed.follow(
                settings, settings.topics.policy, "query-policy",
                lambda tp, record: self.holder.offer(
                    record.value, f"{tp.topic}:{tp.partition}@{record.offset}"),
                policy_read)),
            asyncio.create_task(self.watch_parent()),
            asyncio.create_task(self.sweep_frozen_objects()),
            asyncio.create_task(self.keep_caught_up()),
        ]
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.web_host, settings.web_port).start()
            log.info("query server listening", extra={
                "event": "query_server_listening", "web_port": settings.web_port})
            await self.stopped.wait()
        finally:
            await runner.cleanup()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.proxy.close()
            self.replicas.close()
        log.info("query server stopped", extra={"event": "query_server_stop"})


def serve(settings: Settings, worker_url: str, pipe: Connection, parent_pid: int) -> None:
    """The query server process's entry point."""
    logging.config.dictConfig(logging_config(settings.log_level))
    # Ctrl-C reaches the whole process group: the worker stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Its parse caches fill as the worker's do: a full collection walked them all, 58-130 ms
    # with every check in flight waiting (ee3fbef:docs/performance.md, "Check API under load").
    if settings.gc_freeze:
        gc_pauses.install()
    try:
        asyncio.run(QueryProcess(settings, worker_url, pipe, parent_pid).run())
    except Exception:
        log.exception("query server failed", extra={"event": "query_server_failed"})
        raise SystemExit(1) from None
    with contextlib.suppress(OSError):
        pipe.close()
