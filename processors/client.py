"""Producer helper for upstream services: validated, normalised, keyed, idempotent sends.

    from processors.client import OutboundProducer, InvalidMessage

    with OutboundProducer("127.0.0.1:9092") as gate:  # security=from_env().security for TLS/SASL
        gate.send({"message_id": "m-1", "tenant_id": "acme", "recipient": "+14165550123",
                   "kind": "template", "template": {"name": "order_update", "language": "en_US"},
                   "created_at": "2026-11-26T10:00:00Z"})

A message that breaks the contract raises InvalidMessage before anything is sent; a number that
is not valid raises InvalidRecipient; a broker that refuses the record raises PublishError.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from processors import contracts
from processors.enrich import parse_recipient
from processors.kafka_security import client_options
from processors.settings import KafkaSecurity, Topics


class GateClientError(Exception):
    """Base of the helper's errors."""


class InvalidMessage(GateClientError):
    """The message breaks schemas/outbound-message.schema.json; the text says where."""


class InvalidRecipient(GateClientError):
    """The recipient is not a valid phone number (the gate would reject it)."""


class PublishError(GateClientError):
    """Kafka did not take the record."""


def gate_key(message: dict[str, Any]) -> str:
    """tenant_id:+E164, the key the gate keeps recipient state under (no repartition hop)."""
    recipient = parse_recipient(message["recipient"], message.get("recipient_region"))
    if recipient.e164 is None:
        raise InvalidRecipient(f"message {message['message_id']}: {recipient.problem}")
    return f"{message['tenant_id']}:{recipient.e164}"


class OutboundProducer:
    def __init__(self, bootstrap_servers: str, topic: str | None = None,
                 security: KafkaSecurity | None = None, **producer_config: Any) -> None:
        self.topic = topic or Topics().outbound
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                # Idempotent: a retried send is written once.
                enable_idempotence=True, acks="all", linger_ms=5,
                **{**client_options(security or KafkaSecurity()), **producer_config})
        except KafkaError as exc:
            raise PublishError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc

    def send(self, message: dict[str, Any], timeout: float | None = None) -> tuple[int, int]:
        """Validate, key and send one message; returns (partition, offset) once written.

        timeout=None waits up to 30 s for the broker's acknowledgement.
        """
        problem = contracts.first_error("outbound_message", message)
        if problem:
            raise InvalidMessage(problem)
        key = gate_key(message)
        try:
            future = self._producer.send(self.topic, key=key.encode(), value=orjson.dumps(message))
            metadata = future.get(timeout=30 if timeout is None else timeout)
        except KafkaError as exc:
            raise PublishError(f"message {message['message_id']} not written: {exc}") from exc
        return metadata.partition, metadata.offset

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> OutboundProducer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
