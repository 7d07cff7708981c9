"""outbound-gate notify: tell agents and campaign owners why messages were stopped."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Any

from processors.cli.common import kafka_ready, settings_for

# The environment the command reads (the broker, its security, the topic names).
# SIGINT / SIGTERM end the run at the next poll; closing the Kafka clients then takes at most this.
CLOSE_SECONDS = 10
ENVIRONMENT = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_*", "OUTBOUND_GATE_TOPIC_REJECTED",
               "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_DLQ", "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_SETTLED",
               "OUTBOUND_GATE_PARTITIONS", "OUTBOUND_GATE_REPLICATION_FACTOR")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="turn rejections into notifications for agents and campaign owners",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Consume the rejected topic and turn each rejection into one notification: one\n"
            "plain sentence, what to do next, when a retry makes sense, the ticket or campaign\n"
            "of the message's context, and an idempotency key (also the Idempotency-Key\n"
            "header). Writes JSON lines to stdout, or POSTs each to --webhook: 2xx delivers;\n"
            "408, 429, 5xx, a timeout or no connection are retried with capped exponential\n"
            "back-off and jitter, waiting at least the receiver's Retry-After; any other answer\n"
            "(a 4xx) goes to the notification dead-letter topic with the receiver's answer,\n"
            "and so does a notification retried for longer than --give-up-after. Each\n"
            "settlement is recorded in the settled topic (compacted) in one Kafka transaction\n"
            "with the consumer's offsets: a restart resumes after the last settled rejection,\n"
            "and a rejection already settled is never sent or dead-lettered again."
        ),
    )
    parser.add_argument("--webhook", metavar="URL", help="POST notifications here (JSON)")
    parser.add_argument("--group", default="outbound-gate-notifier",
                        help="consumer group, also the transactional id's stem; run one "
                             "notifier per group (outbound-gate-notifier)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the receiver's answer to one POST (10)")
    parser.add_argument("--backoff", type=float, default=0.5,
                        help="ceiling of the first back-off in seconds, doubled each retry, "
                             "jittered (0.5)")
    parser.add_argument("--max-backoff", type=float, default=60.0,
                        help="no back-off ceiling above this many seconds (60)")
    parser.add_argument("--give-up-after", type=float, default=3600.0,
                        help="dead-letter a notification still not delivered after this many "
                             "seconds of retries (3600)")
    parser.add_argument("--once", action="store_true",
                        help="stop when the topic has been read to its end")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for("notify")
    if settings is None or not kafka_ready("notify", settings):
        return 2
    from kafka.errors import KafkaError

    # Kafka and HTTP only when the command runs.
    from processors.runtime import kafka_clients
    from processors.runtime.topics import create_missing
    from processors.tools.kafka_io import read_to_end
    from processors.tools.notifier import (
        CommitOnRevoke,
        Notifier,
        Settler,
        WebhookSender,
        print_sender,
        settled_keys,
    )
    from processors.tools.notify import RetryPolicy

    topics = settings.topics
    sender = WebhookSender(args.webhook, args.timeout) if args.webhook else None
    try:
        # The rejected topic too: before the first worker ran, --once would wait for it forever.
        create_missing(settings.bootstrap_servers,
                       [topics.rejected, topics.notifications_dlq, topics.notifications_settled],
                       settings.partitions, settings.replication_factor,
                       compacted=[topics.notifications_settled], security=settings.security)
        settled = settled_keys(read_to_end(settings, topics.notifications_settled, 120))
        listener = CommitOnRevoke()
        consumer = kafka_clients.consumer(
            settings.bootstrap_servers, settings.security, group_id=args.group,
            auto_offset_reset="earliest", client_id=f"{args.group}-notifier",
            # A notifier killed mid-run holds its partitions this long at most.
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000)
        consumer.subscribe([topics.rejected], listener=listener)
        # One transactional id per group: a restarted notifier fences its dead predecessor
        # and aborts what that one left open.
        producer = kafka_clients.producer(settings.bootstrap_servers, settings.security,
                                          transactional_id=f"{args.group}-settle")
        producer.init_transactions()
    except KafkaError as exc:
        print(f"outbound-gate notify: Kafka at {settings.bootstrap_servers}: {exc}",
              file=sys.stderr)
        return 1
    settler = Settler(producer, consumer, topics.notifications_settled, topics.notifications_dlq)
    listener.settler = settler
    notifier = Notifier(consumer, settler, sender or print_sender,
                        RetryPolicy(first=args.backoff, cap=args.max_backoff,
                                    give_up_after=args.give_up_after), settled)
    print(f"outbound-gate notify: {len(settled)} settled before; reading {topics.rejected}",
          file=sys.stderr, flush=True)
    def stop(signum: int, _: Any) -> None:
        if notifier.stopping:  # asked twice: stop now
            raise KeyboardInterrupt
        notifier.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    code = 0
    try:
        notifier.run(args.once)
    except KeyboardInterrupt:
        pass
    except KafkaError as exc:
        print(f"outbound-gate notify: Kafka: {exc}; what was not committed is notified again "
              f"with the same idempotency key", file=sys.stderr)
        code = 1
    finally:
        # Aborted by the broker: those records are settled again, with the same keys.
        with contextlib.suppress(KafkaError):
            settler.commit()
        consumer.close(autocommit=False, timeout_ms=CLOSE_SECONDS * 1000)
        producer.close(timeout=CLOSE_SECONDS)
        if sender is not None:
            sender.close()
    counts = notifier.counts
    print(f"outbound-gate notify: {counts.delivered} delivered, {counts.dead_lettered} "
          f"dead-lettered, {counts.skipped} already settled", file=sys.stderr)
    return code
