"""HTTP views of the worker: liveness, readiness, and the catalog entry in force."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from faust.web import Request, Response, View

from processors.core.policy import templates as tpl
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.stream_thread import StreamThread
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings

# The worker's probe and scrape paths: deploy/k8s's probes and ServiceMonitor, and the tests of
# those manifests, take them from here.
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


class BrokerProbe:
    """Can a bootstrap server be reached? Cached briefly: probes should be cheap."""

    def __init__(self, bootstrap_servers: str, ttl: float = 5.0) -> None:
        self.servers = [s.strip().rsplit(":", 1) for s in bootstrap_servers.split(",")]
        self.ttl = ttl
        self.checked = 0.0
        self.reachable = False

    async def __call__(self) -> bool:
        if time.monotonic() - self.checked < self.ttl:
            return self.reachable
        self.reachable = False
        for host, port in self.servers:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            except (TimeoutError, OSError):
                continue
            writer.close()
            self.reachable = True
            break
        self.checked = time.monotonic()
        return self.reachable


def register(app: faust.App, settings: Settings, holder: PolicyHolder,
             catalog_table: CatalogReplica, processor: StreamThread) -> None:
    broker = BrokerProbe(settings.bootstrap_servers)

    @app.page(HEALTH_PATH)
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page(READY_PATH)
    class Ready(View):
        async def get(self, request: Request) -> Response:
            # The catalog is loaded once this worker's replica has read its changelog to the
            # end; the route processor is ready once its partitions' state is restored.
            recovering = bool(app.in_recovery) or bool(app.rebalancing) \
                or not processor.ready or not catalog_table.caught_up
            reachable = await broker()
            assigned = sorted(processor.owned)
            ready = bool(assigned) and not recovering and holder.caught_up and reachable
            body: dict[str, Any] = {
                "ready": ready,
                "assigned": assigned,
                "recovering": recovering,
                "broker_reachable": reachable,
                "policy_caught_up": holder.caught_up,
                "catalog_entries": len(catalog_table),
                "catalog_caught_up": catalog_table.caught_up,
                "policy": {"id": holder.current.id, "version": holder.current.version},
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/catalog/{key}")
    class CatalogEntry(View):
        async def get(self, request: Request, key: str) -> Response:
            history = catalog_table.get(key)
            if not history:
                return self.json({"key": key, "entry": None}, status=404)
            # The newest entry, with what it does not state taken from older ones.
            return self.json({"key": key, "entry": tpl.entry_at(tuple(history), None),
                              "history": history})
