"""Create the topics of DESIGN §3 that are missing, with kafka-python's admin client."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from processors.runtime import kafka_clients
from processors.settings import KafkaSecurity, Settings

log = logging.getLogger(__name__)


def create_missing(bootstrap_servers: str, names: Iterable[str], partitions: int,
                   replication_factor: int = 1, compacted: Iterable[str] = (),
                   single_partition: Iterable[str] = (), timeout_ms: int = 30_000,
                   security: KafkaSecurity | None = None) -> list[str]:
    """Create the named topics that do not exist yet; returns the names created."""
    compact, single = set(compacted), set(single_partition)
    admin = kafka_clients.admin(bootstrap_servers, security, timeout_ms)
    try:
        existing = set(admin.list_topics())
        created = []
        for name in names:
            if name in existing:
                continue
            topic = NewTopic(
                name=name,
                num_partitions=1 if name in single else partitions,
                replication_factor=replication_factor,
                topic_configs={"cleanup.policy": "compact"} if name in compact else {},
            )
            try:
                admin.create_topics([topic], timeout_ms=timeout_ms)
                created.append(name)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
            wait_until_led(admin, created, timeout_ms)
        return created
    finally:
        admin.close()


def wait_until_led(admin: Any, names: list[str], timeout_ms: int) -> None:
    """Return once the broker's metadata shows every partition of these topics with a leader.

    A worker started right after its topics were created joined its group before the broker's
    metadata had them: Faust's assignor ignored them as missing and the worker never became
    ready (`make run` on a fresh broker, once; an e2e file run right after `kafka.sh up`)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        described = admin.describe_topics(names)
        if len(described) == len(names) and all(
                topic["error_code"] == 0 and topic["partitions"]
                and all(p["leader_id"] >= 0 for p in topic["partitions"])
                for topic in described):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders after {timeout_ms / 1000:.0f} s: "
                               f"{', '.join(names)}")
        time.sleep(0.1)  # waiting for the broker's metadata, not a test


def ensure_topics(settings: Settings, timeout_ms: int = 30_000) -> list[str]:
    """The gate's topics: the catalog, the policy, the state changelog and the notifier's
    settlements compacted, the policy in one partition (every worker reads all of it, in
    order)."""
    topics = settings.topics
    return create_missing(
        settings.bootstrap_servers,
        [*topics.all(), settings.repartition_topic, settings.changelog_topic,
         settings.catalog_changelog_topic],
        settings.partitions, settings.replication_factor,
        compacted=[topics.templates, topics.policy, settings.changelog_topic,
                   settings.catalog_changelog_topic, topics.notifications_settled],
        single_partition=[topics.policy],
        timeout_ms=timeout_ms, security=settings.security)
