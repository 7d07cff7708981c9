"""The dead-letter topic: raw bytes, where they came from, and why they could not be decided."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from processors import outputs
from processors.decode import DecodeError
from processors.metrics import GateMetrics
from processors.models import DeadLetter
from processors.settings import Settings

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, app: faust.App, settings: Settings, metrics: GateMetrics) -> None:
        self.topic = app.topic(settings.topics.dlq, key_serializer="raw", value_serializer="raw")
        self.metrics = metrics

    async def send(self, message: Any, error: DecodeError) -> None:
        """message: the Faust Message (topic, partition, offset, key, value as raw bytes)."""
        letter = DeadLetter(**outputs.dead_letter(
            message.topic, message.partition, message.offset, message.key, message.value,
            error.reason, str(error), time.time(), message.headers))
        await self.topic.send(key=outputs.dead_letter_key(message.key),
                              value=orjson.dumps(letter.asdict()))
        self.metrics.dead_letters.labels(message.topic, error.reason).inc()
        # Where and why only: the error text can quote the input, and input holds numbers.
        log.warning("dead letter", extra={"event": "dead_letter", "reason": error.reason,
                                          "topic": message.topic, "partition": message.partition,
                                          "offset": message.offset})
