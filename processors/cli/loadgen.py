"""outbound-gate loadgen: produce a realistic, seeded workload to Kafka (kafka-python)."""

from __future__ import annotations

import argparse
import sys
import time

from processors.cli.common import kafka_ready, settings_for
from processors.settings import Topics

FIELDS = ("outbound", "statuses", "inbound", "preferences", "templates")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "loadgen",
        help="produce a realistic, seeded workload to Kafka",
        description=(
            "Produce the template catalog, then COUNT input records: outbound messages from 50 "
            "tenants to 200,000 recipients (both Zipf; 30% US, 8% Canada, 30 other "
            "countries), 60% marketing / 30% utility / 5% authentication / 5% free-form, "
            "1% malformed, and status, inbound and preference events at 5% of the message "
            "rate. Identities as Meta's 2026 webhooks name them: about 10% of the messages go "
            "to business-scoped user IDs (BSUIDs; 2% of the users are known by BSUID alone), "
            "a quarter of the state events link a number and its BSUID, about an eighth name "
            "a BSUID alone. The same --seed gives the same records."
        ),
    )
    parser.add_argument("--count", type=int, default=100_000, help="input records (100000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    parser.add_argument("--bsuid-share", type=float, default=0.10,
                        help="share of the messages addressed to BSUIDs (0.10); 0 for numbers "
                             "only (no BSUID, no linking)")
    parser.add_argument("--number-changes", type=float,
                        help="share of the state events of users with a number that are "
                             "user_changed_number (default 0.05); 0 for none")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="records per second; 0 = as fast as possible (0)")
    parser.add_argument("--prefix", help="topics <prefix>.outbound, .statuses, .inbound, "
                                         ".preferences, .templates instead of the configured ones")
    parser.add_argument("--no-catalog", action="store_true", help="skip the template catalog")
    parser.set_defaults(run=run)


def topic_names(prefix: str | None, topics: Topics) -> dict[str, str]:
    if prefix:
        return {field: f"{prefix}.{field}" for field in FIELDS}
    return {field: getattr(topics, field) for field in FIELDS}


def run(args: argparse.Namespace) -> int:
    if args.count < 0 or args.rate < 0:
        print("outbound-gate loadgen: --count and --rate must not be negative", file=sys.stderr)
        return 2
    if args.number_changes is not None and not 0 <= args.number_changes <= 1:
        print("outbound-gate loadgen: --number-changes must be between 0 and 1", file=sys.stderr)
        return 2
    if not 0 <= args.bsuid_share < 1:
        print("outbound-gate loadgen: --bsuid-share must be at least 0 and below 1",
              file=sys.stderr)
        return 2
    settings = settings_for("loadgen")
    if settings is None:
        return 2
    names = topic_names(args.prefix, settings.topics)
    if not kafka_ready("loadgen", settings):
        return 2
    from kafka.errors import KafkaError

    from processors.runtime import kafka_clients
    from processors.runtime.topics import create_missing
    from processors.tools.loadgen import NUMBER_CHANGES, Workload
    try:
        create_missing(settings.bootstrap_servers, names.values(), settings.partitions,
                       settings.replication_factor, compacted=[names["templates"]],
                       security=settings.security)
    except KafkaError as exc:
        print(f"outbound-gate loadgen: cannot reach Kafka at {settings.bootstrap_servers}: "
              f"{exc}", file=sys.stderr)
        return 1
    print(f"building the workload (seed {args.seed})", file=sys.stderr)
    workload = Workload(args.seed, bsuid_share=args.bsuid_share, number_changes=NUMBER_CHANGES
                        if args.number_changes is None else args.number_changes)
    try:
        # Throughput over durability: a load generator, not a producer of record.
        producer = kafka_clients.producer(settings.bootstrap_servers, settings.security, acks=1,
                                          enable_idempotence=False, linger_ms=20,
                                          batch_size=256 * 1024,
                                          max_request_size=4 * 1024 * 1024)
    except KafkaError as exc:
        print(f"outbound-gate loadgen: cannot reach Kafka at {settings.bootstrap_servers}: "
              f"{exc}", file=sys.stderr)
        return 1
    now = time.time()
    if not args.no_catalog:
        for record in workload.catalog(now):
            producer.send(names[record.topic], key=record.key, value=record.value)
        producer.flush()
    started = time.monotonic()
    step = max(1, args.count // 10)
    for index, record in enumerate(workload.events(args.count, now), start=1):
        producer.send(names[record.topic], key=record.key, value=record.value)
        if args.rate:
            ahead = index / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing of a steady offered rate
        if index % step == 0:
            print(f"  {index:,} / {args.count:,} records", file=sys.stderr)
    producer.flush()
    producer.close()
    elapsed = time.monotonic() - started
    print(f"produced {args.count:,} records in {elapsed:.1f} s "
          f"({args.count / max(elapsed, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0
