"""The notifier's Kafka side: rejections in, each settled once (delivered or dead-lettered).

Each settlement is a record in the compacted settled topic (key: the idempotency key), plus a
letter in the notification dead-letter topic when it was not delivered, committed in one Kafka
transaction with the consumer's offsets. So a restart resumes after the last settled
rejection, and a rejection met again (the rejected topic replayed, a new consumer group)
whose key is settled is neither sent nor dead-lettered again: the settled topic, read at
start, is the de-duplication, not memory. What a crash can repeat is the POST of the
notifications delivered since the last commit (at most `commit_every` or `commit_seconds`
worth), with the same Idempotency-Key, which the receiver de-duplicates on.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from processors.core import outputs
from processors.core.timeutil import format_rfc3339
from processors.tools.notify import (
    ANSWER_MAX_CHARS,
    DEAD_LETTER,
    Answer,
    RetryPolicy,
    Settlement,
    deliver,
    described,
    idempotency_key,
    notification_of,
    parse_retry_after,
)

log = logging.getLogger(__name__)


class WebhookSender:
    """POSTs notifications over one pooled connection (httpx), with the Idempotency-Key."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        import httpx

        self.url = url
        self._httpx = httpx
        self.client = httpx.Client(timeout=timeout, headers=headers or {})

    def __call__(self, notification: dict[str, Any]) -> Answer:
        httpx = self._httpx
        try:
            response = self.client.post(
                self.url, content=orjson.dumps(notification),
                headers={"Content-Type": "application/json",
                         "Idempotency-Key": notification["idempotency_key"]})
        except httpx.TimeoutException as exc:
            return Answer(None, error=f"no answer within the timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return Answer(None, error=f"{type(exc).__name__}: {exc}")
        return Answer(response.status_code, response.text[:ANSWER_MAX_CHARS],
                      parse_retry_after(response.headers.get("Retry-After"), time.time()))

    def close(self) -> None:
        self.client.close()


def print_sender(notification: dict[str, Any]) -> Answer:
    """No webhook: JSON lines on stdout, delivered as soon as written."""
    sys.stdout.write(orjson.dumps(notification).decode() + "\n")
    sys.stdout.flush()
    return Answer(200)


@dataclass
class Counts:
    delivered: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # settled before (delivered or dead-lettered)


@dataclass
class Settler:
    """Settlements and offsets, committed together in transactions of a few records each."""

    producer: KafkaProducer
    consumer: KafkaConsumer
    settled_topic: str
    dlq_topic: str
    commit_every: int = 50
    commit_seconds: float = 0.2
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    opened_at: float | None = None

    def _open(self) -> None:
        if self.opened_at is None:
            self.producer.begin_transaction()
            self.opened_at = time.monotonic()

    def passed(self, record: Any) -> None:
        """A record settled before (or not a rejection): only its offset moves on."""
        self._open()
        self._advance(record)

    def settle(self, record: Any, key: str, settlement: Settlement,
               letter: dict[str, Any] | None) -> None:
        self._open()
        self.producer.send(self.settled_topic, key=key.encode(), value=orjson.dumps({
            "outcome": settlement.outcome, "status": settlement.last.status,
            "attempts": settlement.attempts, "reason": settlement.reason,
            "settled_at": format_rfc3339(time.time()),
            "source": f"{record.topic}:{record.partition}:{record.offset}"}))
        if letter is not None:
            self.producer.send(self.dlq_topic, key=record.key, value=orjson.dumps(letter))
        self._advance(record)

    def _advance(self, record: Any) -> None:
        self.offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
            record.offset + 1, "", -1)
        assert self.opened_at is not None
        if (len(self.offsets) >= self.commit_every
                or time.monotonic() - self.opened_at >= self.commit_seconds):
            self.commit()

    def commit(self) -> None:
        """Commit the open transaction (settlements with their offsets), if any."""
        if self.opened_at is None:
            return
        if self.offsets:
            self.producer.send_offsets_to_transaction(self.offsets,
                                                      self.consumer.group_metadata())
        self.producer.commit_transaction()
        self.offsets, self.opened_at = {}, None


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions leaving this notifier take their settled offsets with them."""

    def __init__(self) -> None:
        self.settler: Settler | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self.settler is not None:
            self.settler.commit()

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def dead_letter(record: Any, notification: dict[str, Any] | None, settlement: Settlement,
                key: str | None) -> dict[str, Any]:
    """The gate's dead-letter shape (so `outbound-gate dlq list|show|replay` read it, with
    OUTBOUND_GATE_TOPIC_DLQ naming this topic), plus the receiver's answer and the
    notification that was not delivered."""
    letter = outputs.dead_letter(record.topic, record.partition, record.offset, record.key,
                                 record.value, settlement.reason or "refused",
                                 f"{described(settlement.last)} after {settlement.attempts} "
                                 f"attempt(s)", time.time(), record.headers)
    return {**letter, "idempotency_key": key, "attempts": settlement.attempts,
            "answer": {"status": settlement.last.status, "body": settlement.last.body,
                       "error": settlement.last.error},
            "notification": notification}


class Stopped(Exception):
    """A stop was asked for during a back-off: the notification in hand stays unsettled (a
    restart sends it again, with the same Idempotency-Key)."""


@dataclass
class Notifier:
    """Reads rejections and settles each. stop() (a signal handler calls it) ends run() at the
    next poll or back-off step, never inside a Kafka call: a KeyboardInterrupt raised in the
    Kafka client's internals could leave its locks or transaction half-done, and closing it then
    hung."""

    consumer: KafkaConsumer
    settler: Settler
    send: Callable[[dict[str, Any]], Answer]
    policy: RetryPolicy
    settled: dict[str, str]  # idempotency key -> outcome, from the settled topic
    counts: Counts = field(default_factory=Counts)
    rand: Callable[[], float] = random.random
    stopping: bool = False

    def stop(self) -> None:
        self.stopping = True

    def wait(self, seconds: float) -> None:
        """Back off without holding settled work or the group: commit what is settled, then
        poll with every partition paused (a consumer that stops polling for
        max.poll.interval.ms is put out of its group)."""
        self.settler.commit()
        paused = list(self.consumer.assignment())
        self.consumer.pause(*paused)
        deadline = time.monotonic() + seconds
        try:
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                self.consumer.poll(timeout_ms=max(1, int(min(left, 1.0) * 1000)))
        finally:
            self.consumer.resume(*paused)
        if self.stopping:
            raise Stopped

    def handle(self, record: Any) -> None:
        try:
            rejection = orjson.loads(record.value)
            if not isinstance(rejection, dict):
                raise ValueError("not a JSON object")
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            unreadable = Settlement(DEAD_LETTER, 0, Answer(None, error=f"unreadable: {exc}"),
                                    "unreadable")
            self.settler.settle(record, f"unreadable:{record.partition}:{record.offset}",
                                unreadable, dead_letter(record, None, unreadable, None))
            self.counts.dead_lettered += 1
            return
        key = idempotency_key(rejection)
        if key in self.settled:
            self.settler.passed(record)  # delivered or dead-lettered before: once is enough
            self.counts.skipped += 1
            return
        notification = notification_of(rejection)
        settlement = deliver(notification, self.send, self.policy, self.wait, time.monotonic,
                             self.rand)
        letter = None
        if settlement.outcome == DEAD_LETTER:
            letter = dead_letter(record, notification, settlement, key)
            self.counts.dead_lettered += 1
            # Which rejection and why, never the body or the recipient (numbers stay out).
            print(f"outbound-gate notify: {rejection.get('message_id')} dead-lettered "
                  f"({settlement.reason}: {described(settlement.last)}, "
                  f"{settlement.attempts} attempt(s))", file=sys.stderr, flush=True)
        else:
            self.counts.delivered += 1
        self.settler.settle(record, key, settlement, letter)
        self.settled[key] = settlement.outcome

    def run(self, once: bool, stop_idle_polls: int = 3) -> None:
        """Until stop() (or, with once, the end of the topic); what was settled is committed
        on the way out by the caller (Settler.commit)."""
        idle = 0
        while not self.stopping:
            batches = self.consumer.poll(timeout_ms=1000, max_records=100)
            records = sorted((r for batch in batches.values() for r in batch),
                             key=lambda r: (r.partition, r.offset))
            if not records:
                self.settler.commit()
                idle += 1
                if once and idle >= stop_idle_polls and self.consumer.assignment() \
                        and self.at_end():
                    return
                continue
            idle = 0
            for record in records:
                if self.stopping:
                    break  # this record and the rest of the batch: read again after a restart
                try:
                    self.handle(record)
                except Stopped:
                    break
            self.settler.commit()

    def at_end(self) -> bool:
        assigned = list(self.consumer.assignment())
        ends = self.consumer.end_offsets(assigned)
        return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)


def settled_keys(pairs: list[tuple[bytes | None, bytes | None]]) -> dict[str, str]:
    """Idempotency key -> latest outcome, from the settled topic's records in order."""
    settled: dict[str, str] = {}
    for key, value in pairs:
        if key is None:
            continue
        if value is None:
            settled.pop(key.decode(), None)
            continue
        try:
            settled[key.decode()] = str(orjson.loads(value).get("outcome"))
        except (orjson.JSONDecodeError, AttributeError):
            continue
    return settled
