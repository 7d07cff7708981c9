"""The Faust app and its settings: wiring only. The catalog agent lives in catalog.py, the route
loop (a service of the app) in processors.runtime.engine.stream_thread.

What Faust does in the gate: the worker's lifecycle (start, signals, clean stop), the web
server (/healthz, /readyz, /catalog, /metrics with its sensor's consumer and producer metrics),
the template catalog as a GlobalTable every worker holds whole, and the policy follower task.
What it does not do: the route step. That is processors.runtime's own exactly-once loop,
stream_thread.RouteLoop, on a thread that the StreamThread service starts and stops (see
processors.runtime.engine.stream_thread for why)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CollectorRegistry

from processors.core.policy import PolicySet, load_policy
from processors.runtime import (
    catalog,
    check_api,
    gc_pauses,
    kafka_clients,
    policy_feed,
    query_server,
    views,
)
from processors.runtime.engine.stream_thread import StreamThread
from processors.runtime.gate.processor import GateProcessor
from processors.runtime.kafka_security import faust_credentials
from processors.runtime.metrics import ApiMetrics, GateMetrics, adopt_faust_sensor
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, policies: PolicySet | None = None) -> faust.App:
    datadir = Path(settings.data_dir).resolve() / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    # With a query server, it owns the public port and passes all but the check API on to
    # Faust's web server, on a loopback port of its own.
    queries = query_server.enabled(settings)
    web_host, web_port = settings.web_host, settings.web_port
    if queries:
        web_host, web_port = ((settings.web_host, settings.worker_port) if settings.worker_port
                              else ("127.0.0.1", query_server.loopback_port()))
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings.security),
        store="memory://",  # the catalog; recipient state lives in processors.runtime
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_port=web_port,
        web_host=web_host,
        web_in_thread=False,
        # A killed worker's partitions move after this long without heartbeats (Faust's default
        # of 60 s keeps them idle for a minute after a crash).
        broker_session_timeout=settings.session_timeout_seconds,
        consumer_group_instance_id=settings.instance_id,  # static membership, as the route's
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        table_standby_replicas=0,  # only the catalog GlobalTable is Faust's: no standbys
        producer_max_request_size=max(settings.max_message_bytes * 2, 1_048_576),
        # The gate decodes raw bytes itself so that bad input can reach the dead-letter topic.
        key_serializer="raw",
        value_serializer="raw",
    )
    registry = CollectorRegistry()
    # Faust's own consumer, commit, rebalance and send metrics, served with ours on /metrics.
    # A fixed prefix keeps dashboards independent of the app id.
    setup_prometheus_sensors(app, pattern=views.METRICS_PATH, registry=registry,
                             name_prefix="faust")
    adopt_faust_sensor(registry, app.monitor)
    metrics = GateMetrics(registry, settings.tenant_label_cap)
    # The file (or packaged) policy is in force until the policy topic says otherwise.
    holder = PolicyHolder(policies or load_policy(settings.policy_file), metrics)
    policy_feed.register(app, settings, holder)
    catalog_table = catalog.register(app, settings, metrics)
    gate = GateProcessor(settings, holder, catalog_table, metrics)
    processor = StreamThread(settings, gate, metrics,
                             lambda: faust_ready(app) and catalog_table.caught_up,
                             loop=app.loop, beacon=app.beacon)
    app.add_dependency(processor)  # started and stopped with the worker
    views.register(app, settings, holder, catalog_table, processor)
    if queries:
        local = "127.0.0.1" if web_host in kafka_clients.WILDCARDS else web_host
        server = query_server.QueryServer(settings, f"http://{local}:{web_port}", metrics,
                                          loop=app.loop, beacon=app.beacon)
        processor.on_readable(server.partitions_changed)
        app.add_dependency(server)
    else:
        web = app.web
        assert isinstance(web, AiohttpWeb), "the check API needs Faust's aiohttp web driver"
        web.web_app.router.add_routes(check_api.routes(
            settings, gate.previews, lambda: processor.reader, ApiMetrics(registry), holder,
            catalog_table, lambda: catalog_table.caught_up and holder.caught_up))

    @app.task  # type: ignore[untyped-decorator]
    async def announce() -> None:  # runs once the worker has set up logging
        log.info("worker started", extra={
            "event": "start", "app_id": settings.app_id, "bootstrap": settings.bootstrap_servers,
            "kafka_security": settings.security.describe(),
            "web_port": settings.web_port, "query_server": queries,
            "advertised_url": kafka_clients.advertised_url(settings),
            "instance_id": settings.instance_id,
            "partitions": settings.partitions,
            "store": settings.store, "policy_id": holder.current.id,
            "policy_version": holder.current.version})

    @app.timer(interval=gc_pauses.SWEEP_SECONDS)  # type: ignore[untyped-decorator]
    async def sweep_frozen_objects() -> None:
        if gc_pauses.installed():  # the worker froze what survived full collections
            gc_pauses.sweep()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def log_assignment(sender: faust.App, assigned: set[Any], **_: Any) -> None:
        log.info("partitions assigned", extra={
            "event": "assignment", "partitions": sorted(f"{tp.topic}:{tp.partition}"
                                                        for tp in assigned)})

    return app


def faust_ready(app: faust.App) -> bool:
    """Faust's part is up: the catalog agent's partitions assigned and its table recovered."""
    return bool(app.assignor.assigned_actives()) and not app.in_recovery \
        and not app.rebalancing
