"""The one Kafka client factory: every client of the gate and its tools is built here, with
the security settings applied in one place (processors.runtime.kafka_security.client_options).

Three client libraries, each where it fits: confluent-kafka (librdkafka) for the route loop and
restore (one transactional producer per worker whose offsets carry the consumer group's
metadata, KIP-447, which aiokafka lacks; the record work in C), aiokafka inside the Faust side
of the worker (the policy follower; Faust's own clients), kafka-python in the synchronous tools
and tests (producer helper, dead-letter tools, notifier, admin)."""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from processors.runtime.kafka_security import client_options, librdkafka_options
from processors.settings import KafkaSecurity, Settings, SettingsError

# librdkafka's own log lines, as JSON lines of the worker's log (else raw lines on stderr);
# they are served on the thread that polls.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
# What the broker gathers for the route consumer before fetch_wait_ms is up: more than a full
# batch of records, so that only a backlog cuts the wait short.
FETCH_MIN_BYTES = 1_048_576


def route_producer(settings: Settings, transactional_id: str | None,
                   on_delivery: Callable[[KafkaError | None, Message], None]) -> Producer:
    """The route loop's producer: exactly-once, the worker's one transactional producer (its
    offsets carry the consumer's group metadata, KIP-447); at-least-once, idempotent."""
    options: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"{settings.app_id}-route",
        "enable.idempotence": True,
        "acks": "all",
        # Keyed records where the Java client and kafka-python put them (murmur2); librdkafka's
        # default partitioner (CRC32) would scatter a recipient's records.
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "batch.size": 256 * 1024,
        "message.max.bytes": max(settings.max_message_bytes * 2, 1_048_576),
        "queue.buffering.max.messages": 1_000_000,
        # Back-to-back transactions meet CONCURRENT_TRANSACTIONS until the previous one's
        # markers are written; librdkafka's default backoff (100 ms, growing to 1 s) then was
        # most of the decision latency.
        "retry.backoff.ms": 2,
        "retry.backoff.max.ms": 10,
        "on_delivery": on_delivery,
        "logger": LIBRDKAFKA_LOG,
        **librdkafka_options(settings.security),
    }
    if transactional_id is not None:
        options["transactional.id"] = transactional_id
        # A worker that dies inside a transaction blocks read_committed readers of its outputs,
        # and the next owner of its partitions, this long at most.
        options["transaction.timeout.ms"] = settings.transaction_timeout_seconds * 1000
    return Producer(options)


def route_consumer(settings: Settings, group_id: str) -> Consumer:
    """The route loop's consumer in the route group (offsets committed only with outputs)."""
    return Consumer(route_consumer_options(settings, group_id))


def route_consumer_options(settings: Settings, group_id: str) -> dict[str, Any]:
    session_ms = settings.session_timeout_seconds * 1000
    return {
        **_reader_options(settings, "route"),
        # The group's description names each member's client id: the check API finds the
        # owner of a partition (and its URL) there.
        "client.id": f"{settings.app_id}-route@{advertised_url(settings)}",
        "group.id": group_id,
        # The same partition numbers of every input topic to one worker: co-partitioning.
        "partition.assignment.strategy": "range",
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(1000, session_ms // 5),
        **fetch_wait_options(settings.fetch_wait_ms),
        **static_membership(settings),
    }


def static_membership(settings: Settings) -> dict[str, str]:
    """group.instance.id (KIP-345) when the worker has a stable id: a restart within the
    session timeout keeps its partitions, with no rebalance (and close() does not leave the
    group: a stopped member's partitions wait for it until the session times out)."""
    return {"group.instance.id": settings.instance_id} if settings.instance_id else {}


def fetch_wait_options(wait_ms: int) -> dict[str, int]:
    """The broker answers after wait_ms, or once FETCH_MIN_BYTES are there, not for every
    record that arrives (settings.fetch_wait_ms); 0: as soon as any record is there."""
    return {"fetch.wait.max.ms": wait_ms, "fetch.min.bytes": FETCH_MIN_BYTES if wait_ms else 1}


WILDCARDS = ("0.0.0.0", "::", "")


def advertised_url(settings: Settings) -> str:
    """Where other workers reach this one's HTTP port: the configured URL; else the address
    it binds; else (bound to every address) the address this host reaches the first broker
    from, which other hosts of that network can reach too. Never loopback by accident: a pod
    that advertised 127.0.0.1 would look like the owner of every partition to every pod."""
    if settings.advertised_url:
        return settings.advertised_url.rstrip("/")
    host = settings.web_host
    if host in WILDCARDS:
        host = route_address(settings.bootstrap_servers)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}"


@functools.cache
def route_address(bootstrap_servers: str) -> str:
    """The local address of the route to the first bootstrap server (a UDP socket's connect
    picks it and sends nothing)."""
    first = bootstrap_servers.split(",")[0].strip()
    server, _, port = first.rpartition(":")
    server = server.strip("[]") or first
    try:
        family, _, _, _, address = socket.getaddrinfo(
            server, int(port or 9092), type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            local: str = probe.getsockname()[0]
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"OUTBOUND_GATE_WEB_HOST is a wildcard and OUTBOUND_GATE_ADVERTISED_URL is unset, "
            f"and no route to {first!r} tells this host's address ({exc}): set "
            f"OUTBOUND_GATE_ADVERTISED_URL to the URL other workers reach this one at") from exc
    return local


def route_admin(settings: Settings) -> AdminClient:
    """librdkafka admin client: describes the route group (who owns which partition)."""
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers,
                        "client.id": f"{settings.app_id}-admin", "logger": LIBRDKAFKA_LOG,
                        **librdkafka_options(settings.security)})


def restore_consumer(settings: Settings) -> Consumer:
    """Reads changelog partitions by assignment; joins no group and commits nothing (librdkafka
    wants a group id all the same)."""
    return Consumer({**_reader_options(settings, "restore"),
                     "group.id": f"{settings.app_id}-restore"})


def _reader_options(settings: Settings, name: str) -> dict[str, Any]:
    fetch = max(settings.max_message_bytes, 1_048_576)
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"{settings.app_id}-{name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.partition.fetch.bytes": fetch,
        "fetch.max.bytes": max(fetch, 8_388_608),
        # Bounded prefetch: what is fetched but not yet processed is resident memory.
        "queued.max.messages.kbytes": 16_384,
        "queued.min.messages": 10_000,
        "logger": LIBRDKAFKA_LOG,
        **librdkafka_options(settings.security),
    }


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
