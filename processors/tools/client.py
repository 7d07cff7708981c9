"""The client for the services around the gate is its own distribution, outbound-gate-client
(clients/python, importing as outbound_gate_client): this module re-exports it, with the
producer helper set up as the gate itself checks and keys messages.

    from processors.tools.client import OutboundProducer, InvalidMessage

    with OutboundProducer("127.0.0.1:9092") as gate:  # security=from_env().security for TLS/SASL
        gate.send({"message_id": "m-1", "tenant_id": "acme", "recipient": "+14165550123",
                   "kind": "template", "template": {"name": "order_update", "language": "en_US"},
                   "created_at": "2026-11-26T10:00:00Z"})

Here a message is validated against the whole outbound-message schema and its recipient
normalised with libphonenumber (a national number with recipient_region is keyed by its E.164
form); the gate's Kafka security settings apply.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import outbound_gate_client
from outbound_gate_client import (
    CheckRefused,
    CheckUnavailable,
    GateChecks,
    GateClientError,
    GateUnreachable,
    InvalidMessage,
    InvalidRecipient,
    PublishError,
    recipient_path,
)

from processors.core import contracts
from processors.core.enrich import parse_recipient
from processors.runtime.kafka_security import client_options
from processors.settings import KafkaSecurity, Topics

__all__ = ["CheckRefused", "CheckUnavailable", "GateChecks", "GateClientError", "GateUnreachable",
           "InvalidMessage", "InvalidRecipient", "OutboundProducer", "PublishError",
           "gate_key", "recipient_path"]


def send_path(accepted: dict[str, Any], phone_number_id: str) -> str:
    """The Cloud API path to send an accepted message through: /<PHONE_NUMBER_ID>/
    marketing_messages for a MARKETING template, /<PHONE_NUMBER_ID>/messages for anything
    else (the enrichment's send_endpoint, from the category the gate decided on)."""
    return f"/{phone_number_id}/{accepted['enrichment']['send_endpoint']}"


def gate_key(message: dict[str, Any]) -> str:
    """tenant_id:identity (the +E164 number, or the BSUID): the key the gate keeps recipient
    state under, so it need not re-key the record (the gate itself forwards a send addressed to
    a BSUID it has linked to a number to that number's partition)."""
    recipient = parse_recipient(message["recipient"], message.get("recipient_region"))
    if recipient.identity is None:
        raise InvalidRecipient(f"message {message['message_id']}: {recipient.problem}")
    return f"{message['tenant_id']}:{recipient.identity}"


class OutboundProducer(outbound_gate_client.OutboundProducer):
    """The client's producer with the gate's own schema validation, keys and Kafka security."""

    def __init__(self, bootstrap_servers: str, topic: str | None = None,
                 security: KafkaSecurity | None = None, **producer_config: Any) -> None:
        super().__init__(bootstrap_servers, topic or Topics().outbound,
                         validate=partial(contracts.first_error, "outbound_message"),
                         key_of=gate_key,
                         **{**client_options(security or KafkaSecurity()), **producer_config})
