"""Contender "ceiling": the most one Python process moves, with no processing at all.

    python -m tests.benchmarks.peers.ceiling --bootstrap 127.0.0.1:9092 --prefix P --group G \
        --output OUT

A confluent-kafka Consumer reads the five input topics from the earliest offset in batches of up
to 1,000 and a Producer copies every record (key and value bytes unchanged) to --output.
Prints READY once partitions are assigned; stops on SIGTERM/SIGINT, flushes, exits 0.
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, KafkaError, Producer

from tests.benchmarks.peers.common import parse_args, ready_on_assign, stop_flag

BATCH = 1000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    stopping = stop_flag()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    })
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
    })
    consumer.subscribe(list(args.topics()), on_assign=ready_on_assign())
    output = args.output
    try:
        while not stopping.is_set():
            for record in consumer.consume(num_messages=BATCH, timeout=0.5):
                error = record.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        print(f"ceiling: consumer error: {error}", file=sys.stderr)
                    continue
                while True:
                    try:
                        producer.produce(output, value=record.value(), key=record.key())
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        producer.poll(0.05)
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
