"""Producer helper for upstream services: validated, normalised, keyed, idempotent sends.

    from processors.tools.client import OutboundProducer, InvalidMessage

    with OutboundProducer("127.0.0.1:9092") as gate:  # security=from_env().security for TLS/SASL
        gate.send({"message_id": "m-1", "tenant_id": "acme", "recipient": "+14165550123",
                   "kind": "template", "template": {"name": "order_update", "language": "en_US"},
                   "created_at": "2026-11-26T10:00:00Z"})

The recipient is a phone number (E.164, wa_id digits, or national with recipient_region) or
Meta's business-scoped user ID (``US.13491208655302741918``, parent ``US.ENT.1181...``): send
the number when you have it, the BSUID otherwise. A message that breaks the contract raises
InvalidMessage before anything is sent; a recipient that is neither a valid number nor a valid
BSUID raises InvalidRecipient; a broker that refuses the record raises PublishError.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import orjson
from kafka.errors import KafkaError

from processors.core import contracts
from processors.core.enrich import parse_recipient
from processors.runtime import kafka_clients
from processors.settings import KafkaSecurity, Topics


class GateClientError(Exception):
    """Base of the helper's errors."""


class InvalidMessage(GateClientError):
    """The message breaks schemas/outbound-message.schema.json; the text says where."""


class InvalidRecipient(GateClientError):
    """The recipient is neither a valid phone number nor a valid business-scoped user ID (the
    gate would reject it)."""


class PublishError(GateClientError):
    """Kafka did not take the record."""


def gate_key(message: dict[str, Any]) -> str:
    """tenant_id:identity (the +E164 number, or the BSUID): the key the gate keeps recipient
    state under, so it need not re-key the record (the gate itself forwards a send addressed to
    a BSUID it has linked to a number to that number's partition)."""
    recipient = parse_recipient(message["recipient"], message.get("recipient_region"))
    if recipient.identity is None:
        raise InvalidRecipient(f"message {message['message_id']}: {recipient.problem}")
    return f"{message['tenant_id']}:{recipient.identity}"


class OutboundProducer:
    def __init__(self, bootstrap_servers: str, topic: str | None = None,
                 security: KafkaSecurity | None = None, **producer_config: Any) -> None:
        self.topic = topic or Topics().outbound
        try:
            # Idempotent: a retried send is written once.
            self._producer = kafka_clients.producer(bootstrap_servers, security,
                                                    **producer_config)
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
