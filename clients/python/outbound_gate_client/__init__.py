"""The client of outbound-gate: the pre-send check API (GateChecks) and the producer helper
(OutboundProducer). Depends only on httpx and kafka-python."""

from outbound_gate_client.checks import GateChecks, recipient_path
from outbound_gate_client.errors import (
    CheckRefused,
    CheckUnavailable,
    GateClientError,
    GateUnreachable,
    InvalidMessage,
    InvalidRecipient,
    PublishError,
)
from outbound_gate_client.producer import OutboundProducer
from outbound_gate_client.types import (
    OPERATIONS,
    PROBLEM_TYPES,
    Batch,
    CheckAnswer,
    Problem,
    Recipient,
    Unavailable,
)

__version__ = "0.1.0"
__all__ = [
    "OPERATIONS", "PROBLEM_TYPES", "Batch", "CheckAnswer", "CheckRefused", "CheckUnavailable",
    "GateChecks", "GateClientError", "GateUnreachable", "InvalidMessage", "InvalidRecipient",
    "OutboundProducer",
    "Problem", "PublishError", "Recipient", "Unavailable", "recipient_path",
]
