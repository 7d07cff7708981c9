"""The outbound agent: decode -> enrich -> decide (the pure core) -> produce; dead letters."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from processors import catalog, outputs
from processors.catalog import CatalogTable
from processors.dead_letters import DeadLetters
from processors.decode import DecodeError, decode
from processors.policy import EMPTY, PolicySet, decide, enrich
from processors.settings import Settings

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, policies: PolicySet,
             catalog_table: CatalogTable) -> None:
    topics = settings.topics
    source = app.topic(topics.outbound, key_serializer="raw", value_serializer="raw")
    accepted = app.topic(topics.accepted, key_serializer="raw", value_serializer="raw")
    rejected = app.topic(topics.rejected, key_serializer="raw", value_serializer="raw")
    dead_letters = DeadLetters(app, settings)

    @app.agent(source, name="route")
    async def route(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                document = decode("outbound_message", message.value, settings.max_message_bytes)
            except DecodeError as error:
                await dead_letters.send(message, error)
                continue
            key, record, was_accepted = judge(document, policies, catalog_table, time.time())
            await (accepted if was_accepted else rejected).send(
                key=key.encode("utf-8"), value=orjson.dumps(record))


def judge(message: dict[str, Any], policies: PolicySet, catalog_table: CatalogTable,
          now: float) -> tuple[str, dict[str, Any], bool]:
    """Gather the inputs of the pure core for one message, call it, shape the output record."""
    entry = None
    if message["kind"] == "template":
        template = message["template"]
        entry = catalog.lookup(catalog_table, message["tenant_id"], template["name"],
                               template["language"], now)
    enrichment = enrich(message, entry)
    # Live per-recipient state (rules 6, 8, 10) comes from the state topics in a later step.
    decision = decide(message, enrichment, EMPTY, entry,
                      policies.for_tenant(message["tenant_id"]), now)
    build = outputs.accepted if decision.accepted else outputs.rejection
    return outputs.output_key(message, enrichment), build(message, enrichment, decision, now), \
        decision.accepted
