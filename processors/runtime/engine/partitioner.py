"""Which partition a key belongs to: Kafka's default partitioner (murmur2), as the Java client,
kafka-python and the route producer (librdkafka's murmur2_random) compute it, so that the engine
sends a record to the partition every other client would."""

from __future__ import annotations

import functools
import struct


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the Java client)."""
    return partition_for_bytes(key.encode("utf-8"), partitions)


@functools.lru_cache(maxsize=131_072)  # keys recur (busy recipients)
def partition_for_bytes(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as aiokafka's and
    kafka-python's pure-Python ones compute it, a word at a time: about three times faster
    (tests/unit/runtime/test_partitioner.py checks they agree)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        rest = length & ~3
        if tail >= 3:
            h ^= data[rest + 2] << 16
        if tail >= 2:
            h ^= data[rest + 1] << 8
        h = ((h ^ data[rest]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h
