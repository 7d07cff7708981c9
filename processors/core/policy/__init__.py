"""The pure policy core: decide() and the data it reads. Imports nothing from Kafka or asyncio."""

from processors.core.policy.document import (
    Policy,
    PolicyError,
    PolicySet,
    load_policy,
    parse_policy,
)
from processors.core.policy.engine import Decision, Enrichment, decide, enrich, message_clock
from processors.core.policy.state import EMPTY, RecipientState

__all__ = [
    "EMPTY",
    "Decision",
    "Enrichment",
    "Policy",
    "PolicyError",
    "PolicySet",
    "RecipientState",
    "decide",
    "enrich",
    "load_policy",
    "message_clock",
    "parse_policy",
]
