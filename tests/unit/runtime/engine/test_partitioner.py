"""The gate's murmur2 is Kafka's: the same partition as the Java client and aiokafka for any key."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from processors.runtime.engine.partitioner import murmur2


def test_murmur2_agrees_with_aiokafka_and_kafka_python_on_random_keys() -> None:
    rng = random.Random(7)
    for length in range(0, 70):
        for _ in range(20):
            key = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(key) == aiokafka_murmur2(key) == kafka_python_murmur2(key) & 0xFFFFFFFF

