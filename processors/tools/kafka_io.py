"""kafka-python helpers for tooling and tests: a producer, and a reader of the output topics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer, TopicPartition

from processors.runtime import kafka_clients
from processors.settings import KafkaSecurity, Settings

# The tools' producer: the client factory's (idempotent, acks=all).
producer = kafka_clients.producer


def send_json(producer_: KafkaProducer, topic: str, key: str | None, value: Any) -> None:
    producer_.send(
        topic,
        key=key.encode("utf-8") if key is not None else None,
        value=None if value is None else orjson.dumps(value),
    )


@dataclass(frozen=True)
class Output:
    topic: str
    key: str | None
    value: dict[str, Any]
    timestamp_ms: int


class OutputReader:
    """Reads topics from their current end: only what is produced after it was created."""

    def __init__(self, bootstrap_servers: str, topics: Iterable[str],
                 security: KafkaSecurity | None = None) -> None:
        self.consumer = kafka_clients.consumer(bootstrap_servers, security, group_id=None,
                                               consumer_timeout_ms=200)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, not at the first poll
            self.consumer.position(tp)
        self.seen: list[Output] = []

    def poll(self) -> list[Output]:
        new = []
        for batch in self.consumer.poll(timeout_ms=200).values():
            for record in batch:
                value = orjson.loads(record.value) if record.value is not None else {}
                key = record.key.decode("utf-8", "replace") if record.key is not None else None
                new.append(Output(record.topic, key, value, record.timestamp))
        self.seen.extend(new)
        return new

    def wait_for(self, done: Callable[[list[Output]], bool], timeout: float,
                 what: str) -> list[Output]:
        """Poll until done(all outputs seen so far) holds; TimeoutError naming what was awaited."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                   f"saw {len(self.seen)} output records")
            self.poll()
        return self.seen

    def close(self) -> None:
        self.consumer.close()


def publish(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            timeout: float = 60) -> list[Any]:
    """Create the gate's topics if missing, send the (key, value) records and wait for each
    acknowledgement; returns their record metadata. Raises KafkaError."""
    from processors.runtime.topics import ensure_topics

    ensure_topics(settings)
    out = producer(settings.bootstrap_servers, settings.security)
    try:
        sent = [out.send(topic, key=key, value=value) for key, value in records]
        return [future.get(timeout=timeout) for future in sent]
    finally:
        out.close()



def read_to_end(settings: Settings, topic: str, timeout: float = 30
                ) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of a topic, from its beginning to its end now (read_committed), in
    timestamp order. Raises KafkaError; TimeoutError when the end is not reached in time."""
    consumer = kafka_clients.consumer(settings.bootstrap_servers, settings.security,
                                      group_id=None, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[tuple[int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout:g} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.timestamp, r.key, r.value) for r in batch)
        records.sort(key=lambda record: record[0])
        return [(key, value) for _, key, value in records]
    finally:
        consumer.close()
