"""The Faust app and its settings: wiring only. Agents live in catalog.py and routing.py."""

from __future__ import annotations

from pathlib import Path

import faust

from processors import catalog, policy_feed, recipient_state, routing, views
from processors.policy import PolicySet, load_policy
from processors.policy_feed import PolicyHolder
from processors.settings import Settings


def create_app(settings: Settings, policies: PolicySet | None = None) -> faust.App:
    datadir = Path(settings.data_dir).resolve() / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",  # the catalog; recipient state names its own store
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        web_in_thread=False,
        # A killed worker's partitions move after this long without heartbeats (Faust's default
        # of 60 s keeps them idle for a minute after a crash).
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        producer_max_request_size=max(settings.max_message_bytes * 2, 1_048_576),
        # The gate decodes raw bytes itself so that bad input can reach the dead-letter topic.
        key_serializer="raw",
        value_serializer="raw",
    )
    # The file (or packaged) policy is in force until the policy topic says otherwise.
    holder = PolicyHolder(policies or load_policy(settings.policy_file))
    policy_feed.register(app, settings, holder)
    catalog_table = catalog.register(app, settings)
    state_table = recipient_state.register(app, settings)
    routing.register(app, settings, holder, catalog_table, state_table)
    views.register(app, holder, catalog_table)
    return app
