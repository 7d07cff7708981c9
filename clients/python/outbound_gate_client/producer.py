"""Publish outbound messages to the gate: checked, keyed, idempotent sends (kafka-python)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from outbound_gate_client.errors import InvalidMessage, InvalidRecipient, PublishError

OUTBOUND_TOPIC = "outbound.messages"
REQUIRED = ("message_id", "tenant_id", "recipient", "kind", "created_at")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
WA_ID = re.compile(r"[1-9][0-9]{6,14}")
# Meta's business-scoped user ID: <country>.<id>, or <country>.ENT.<id> for a parent BSUID.
BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}")


def required_fields(message: dict[str, Any]) -> str | None:
    """The contract's required fields, present and strings (the gate checks the rest)."""
    for name in REQUIRED:
        if not isinstance(message.get(name), str) or not message[name]:
            return f"message {message.get('message_id')!r}: {name} is missing or not a string"
    return None


def simple_key(message: dict[str, Any]) -> str:
    """tenant_id:+E164, or tenant_id:<BSUID>: the key the gate keeps the recipient's state
    under. A national number (with recipient_region) is keyed as written: the gate re-keys
    it, one hop more (processors.tools.client normalises it with libphonenumber instead)."""
    recipient = message["recipient"].strip()
    if WA_ID.fullmatch(recipient):
        recipient = "+" + recipient  # Meta's wa_id: international digits
    elif not (E164.fullmatch(recipient) or BSUID.fullmatch(recipient)
              or message.get("recipient_region")):
        raise InvalidRecipient(f"message {message['message_id']}: the recipient is neither "
                               "an E.164 number nor a business-scoped user ID")
    return f"{message['tenant_id']}:{recipient}"


class OutboundProducer:
    """with OutboundProducer("127.0.0.1:9092") as gate: gate.send(message)

    An idempotent producer (acks=all): a retried send is written once. A message that breaks
    the contract raises InvalidMessage before anything is sent; a recipient that is neither a
    number nor a BSUID raises InvalidRecipient; a broker that refuses the record raises
    PublishError. producer_config goes to kafka-python's KafkaProducer (security_protocol,
    sasl_mechanism, ssl_cafile...)."""

    def __init__(self, bootstrap_servers: str, topic: str | None = None, *,
                 validate: Callable[[dict[str, Any]], str | None] = required_fields,
                 key_of: Callable[[dict[str, Any]], str] = simple_key,
                 **producer_config: Any) -> None:
        self.topic = topic or OUTBOUND_TOPIC
        self.validate = validate
        self.key_of = key_of
        options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5,
                                   **producer_config}
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **options)
        except KafkaError as exc:
            raise PublishError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc

    def send(self, message: dict[str, Any], timeout: float | None = None) -> tuple[int, int]:
        """Validate, key and send one message; returns (partition, offset) once written.

        timeout=None waits up to 30 s for the broker's acknowledgement."""
        problem = self.validate(message)
        if problem:
            raise InvalidMessage(problem)
        key = self.key_of(message)
        value = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            future = self._producer.send(self.topic, key=key.encode(), value=value)
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

