"""Contender "txn_floor": the latency floor of exactly-once on this broker, with no processing.

    python -m tests.benchmarks.peers.txn_floor --bootstrap 127.0.0.1:9092 --prefix P --group G \
        --output OUT

A confluent-kafka consume -> produce loop over <prefix>.outbound that does what the gate's route
loop does per batch and nothing else: read_committed input, what has arrived up to 500 records,
one transaction per batch with the copies (value and key unchanged, same partition), the
consumer's offsets sent with its group metadata (KIP-447), then commit. The producer settings are
the route producer's (linger 2 ms, idempotent, acks=all, retry backoff 2-10 ms), the consumer's
fetch wait the route consumer's (OUTBOUND_GATE_FETCH_WAIT_MS).

The time from a record's send to its copy becoming visible to a read_committed reader is what no
exactly-once processor on this broker and machine can go below: the benchmark reports it beside
the gate's latency. Prints READY once partitions are assigned; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from processors.runtime.kafka_clients import fetch_wait_options
from processors.settings import from_env
from tests.benchmarks.peers.common import parse_args, ready_on_assign, stop_flag

BATCH = 500  # the gate's default OUTBOUND_GATE_BATCH_RECORDS
CALL_SECONDS = 30.0


def batch(consumer: Consumer) -> list[Message]:
    """What has arrived, up to a batch; waits only while nothing has (as the route loop)."""
    messages: list[Message] = consumer.consume(BATCH, 0)
    if not messages:
        messages = consumer.consume(1, 0.2)
        if messages:
            messages += consumer.consume(BATCH - 1, 0)
    return [message for message in messages if message.error() is None]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    stopping = stop_flag()
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed",
                         # the route consumer's fetch wait (the gate's default), so that
                         # the floor stays a floor
                         **fetch_wait_options(from_env({}).fetch_wait_ms)})
    producer = Producer({"bootstrap.servers": args.bootstrap, "transactional.id": args.group,
                         "enable.idempotence": True, "acks": "all", "linger.ms": 2,
                         "retry.backoff.ms": 2, "retry.backoff.max.ms": 10})
    producer.init_transactions(CALL_SECONDS)
    consumer.subscribe([f"{args.prefix}.outbound"], on_assign=ready_on_assign())
    try:
        while not stopping.is_set():
            records = batch(consumer)
            if not records:
                continue
            producer.begin_transaction()
            offsets: dict[tuple[str, int], int] = {}
            for record in records:
                partition = record.partition()
                assert partition is not None
                producer.produce(args.output, record.value(), record.key(), partition)
                offsets[(record.topic() or "", partition)] = (record.offset() or 0) + 1
            producer.flush(CALL_SECONDS)
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, partition, offset)
                 for (topic, partition), offset in offsets.items()],
                consumer.consumer_group_metadata(), CALL_SECONDS)
            producer.commit_transaction(CALL_SECONDS)
    except Exception as exc:  # a benchmark peer: say why and stop
        print(f"txn_floor: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
