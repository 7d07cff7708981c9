"""The one Kafka client factory: every client of the gate and its tools is built here, with
the security settings applied in one place (processors.runtime.kafka_security.client_options).

Two client libraries, each where it fits: aiokafka inside the worker (the route loop, restore,
the policy follower: asyncio, transactions with send_offsets_to_transaction), kafka-python in
the synchronous tools and tests (producer helper, dead-letter tools, notifier, admin)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from processors.runtime.kafka_security import client_options
from processors.settings import KafkaSecurity, Settings


def route_producer(settings: Settings, transactional_id: str | None) -> AIOKafkaProducer:
    """The route loop's producer: one per task exactly-once (transactional), else shared."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=transactional_id or f"{settings.app_id}-route",
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=max(settings.max_message_bytes * 2, 1_048_576),
        # Back-to-back transactions meet CONCURRENT_TRANSACTIONS until the previous one's
        # markers are written; aiokafka's 100 ms default backoff then dominates latency.
        retry_backoff_ms=10,
        # A worker that dies inside a transaction and whose task nobody takes over (no other
        # worker) blocks read_committed readers of its outputs this long at most.
        transaction_timeout_ms=settings.transaction_timeout_seconds * 1000,
        **client_options(settings.security),
    )


def route_consumer(settings: Settings, group_id: str | None) -> AIOKafkaConsumer:
    """The route loop's consumer (group_id set) or the changelog restorer (None)."""
    session_ms = settings.session_timeout_seconds * 1000
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-{'route' if group_id else 'restore'}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # The same partition numbers of every input topic to one worker: co-partitioning.
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(1000, session_ms // 5),
        max_partition_fetch_bytes=max(settings.max_message_bytes, 1_048_576),
        # Bounded prefetch: what is fetched but not yet processed is resident memory.
        fetch_max_bytes=max(settings.max_message_bytes, 8_388_608),
        **client_options(settings.security),
    )


def follower_consumer(settings: Settings, name: str) -> AIOKafkaConsumer:
    """A consumer without a group that reads a whole topic (the policy follower)."""
    return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                            enable_auto_commit=False, client_id=f"{settings.app_id}-{name}",
                            **client_options(settings.security))


def producer(bootstrap_servers: str, security: KafkaSecurity | None = None,
             **overrides: Any) -> KafkaProducer:
    """kafka-python producer for tools and tests: idempotent, acks=all unless overridden."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5,
                               **client_options(security or KafkaSecurity())}
    options.update(overrides)
    return KafkaProducer(bootstrap_servers=bootstrap_servers, **options)


def consumer(bootstrap_servers: str, security: KafkaSecurity | None = None, *topics: str,
             **overrides: Any) -> KafkaConsumer:
    """kafka-python consumer for tools and tests; read_committed, as the gate's outputs are
    transactional, and no auto commit."""
    options: dict[str, Any] = {"enable_auto_commit": False, "isolation_level": "read_committed",
                               **client_options(security or KafkaSecurity())}
    options.update(overrides)
    return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **options)


def admin(bootstrap_servers: str, security: KafkaSecurity | None = None,
          timeout_ms: int = 30_000) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="outbound-gate-admin",
                            request_timeout_ms=timeout_ms,
                            **client_options(security or KafkaSecurity()))
