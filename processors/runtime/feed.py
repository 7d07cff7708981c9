"""Following a whole topic on every worker: no consumer group, every partition, from the
beginning (the policy topic, the template catalog's changelog).

Kafka Streams calls this a global store's update thread: each worker keeps its own full copy
and is caught up once it has read to the end offsets it saw when it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from processors.runtime import kafka_clients
from processors.settings import Settings

PARTITIONS_POLL_SECONDS = 0.5  # a topic that another part of the worker is still creating


async def follow(settings: Settings, topic: str, name: str,
                 apply: Callable[[TopicPartition, ConsumerRecord[bytes, bytes]], object],
                 caught_up: Callable[[], None]) -> None:
    """Apply every record of the topic, forever; call caught_up() once, at the start's ends."""
    consumer = kafka_clients.follower_consumer(settings, name)
    await consumer.start()
    try:
        while True:
            await consumer.topics()  # fetch metadata so that partitions are known
            found = consumer.partitions_for_topic(topic)
            if found:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(PARTITIONS_POLL_SECONDS)  # not a test: waiting for a topic
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = True
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    apply(tp, record)
            if pending:
                positions = {tp: await consumer.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    pending = False
                    caught_up()
    finally:
        await consumer.stop()
