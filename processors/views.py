"""HTTP views of the worker: liveness, readiness with what the worker holds, catalog look-up."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from processors.catalog import CatalogTable
from processors.policy_feed import PolicyHolder


def register(app: faust.App, holder: PolicyHolder, catalog_table: CatalogTable) -> None:
    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            assigned = sorted(
                f"{tp.topic}:{tp.partition}" for tp in app.assignor.assigned_actives()
            )
            recovering = bool(app.in_recovery) or bool(app.rebalancing)
            ready = bool(assigned) and not recovering and holder.caught_up
            body: dict[str, Any] = {
                "ready": ready,
                "assigned": assigned,
                "recovering": recovering,
                "policy_caught_up": holder.caught_up,
                "catalog_entries": len(catalog_table),
                "policy": {"id": holder.current.id, "version": holder.current.version},
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/catalog/{key}")
    class CatalogEntry(View):
        async def get(self, request: Request, key: str) -> Response:
            history = catalog_table.get(key)
            if not history:
                return self.json({"key": key, "entry": None}, status=404)
            return self.json({"key": key, "entry": history[-1], "history": history})
