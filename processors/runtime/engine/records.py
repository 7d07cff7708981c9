"""What the engine hands a processor and takes back: consumed records, records to produce, and
what a batch did (counted once its transaction has committed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from processors.core.frozen import quick_init

# (what, labels...) -> how many; counted once the batch has committed
Tally = Counter[tuple[Any, ...]]


@quick_init
@dataclass(frozen=True, slots=True)
class Record:
    """What a processor needs of one consumed record (confluent-kafka's Message, reshaped)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds
    headers: Sequence[tuple[str, bytes]] = ()
    consumed: float = 0.0  # time.monotonic() when it was fetched


@quick_init
@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce in the transaction of the input it came from (partition None: the
    producer's partitioner picks it from the key)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()
