"""Create the topics of DESIGN §3 that are missing, with kafka-python's admin client."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from processors.settings import Settings

log = logging.getLogger(__name__)


def wanted_topics(settings: Settings) -> list[NewTopic]:
    topics = settings.topics
    # The catalog and the policy: the latest record per key is what matters.
    compacted = {topics.templates, topics.policy}
    return [
        NewTopic(
            name=name,
            # Every worker reads the whole policy topic: one partition keeps it in order.
            num_partitions=1 if name == topics.policy else settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
        )
        for name in [*topics.all(), settings.repartition_topic]
    ]


def ensure_topics(settings: Settings, timeout_ms: int = 30_000) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=timeout_ms,
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted_topics(settings) if t.name not in existing]
        created = []
        for topic in missing:
            try:
                admin.create_topics([topic], timeout_ms=timeout_ms)
                created.append(topic.name)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        admin.close()
