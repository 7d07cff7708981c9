"""The dead-letter topic: raw bytes, where they came from, and why they could not be decided."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from processors.core import outputs
from processors.core.decode import DecodeError
from processors.runtime.metrics import GateMetrics
from processors.settings import Settings

if TYPE_CHECKING:  # the route processor uses encode() without Faust
    import faust

log = logging.getLogger(__name__)


def encode(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
           headers: Sequence[tuple[str, bytes]] | None, error: DecodeError,
           now: float) -> tuple[bytes | None, bytes]:
    """The dead letter of one input record, as the (key, value) to produce; logged."""
    letter = outputs.dead_letter(topic, partition, offset, key, value, error.reason, str(error),
                                 now, headers)
    # Where and why only: the error text can quote the input, and input holds numbers.
    log.warning("dead letter", extra={"event": "dead_letter", "reason": error.reason,
                                      "topic": topic, "partition": partition, "offset": offset})
    return outputs.dead_letter_key(key), orjson.dumps(letter)


class DeadLetters:
    """Dead letters of a Faust agent (the catalog's)."""

    def __init__(self, app: faust.App, settings: Settings, metrics: GateMetrics) -> None:
        self.topic = app.topic(settings.topics.dlq, key_serializer="raw", value_serializer="raw")
        self.metrics = metrics

    async def send(self, message: Any, error: DecodeError) -> None:
        """message: the Faust Message (topic, partition, offset, key, value as raw bytes)."""
        key, value = encode(message.topic, message.partition, message.offset, message.key,
                            message.value, message.headers, error, time.time())
        await self.topic.send(key=key, value=value)
        self.metrics.dead_letters.labels(message.topic, error.reason).inc()
