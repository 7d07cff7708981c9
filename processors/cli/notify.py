"""outbound-gate notify: tell agents and campaign owners why messages were stopped."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import Any

import orjson

from processors.cli.common import kafka_ready, settings_for
from processors.tools.notify import notifications


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="turn rejections into notifications for agents and campaign owners",
        description=(
            "Consume the rejected topic and turn each rejection into what a person reads: one "
            "plain sentence, what to do next, and when a retry makes sense; de-duplicated by "
            "message_id and grouped by the ticket or campaign in the message's context. Writes "
            "JSON lines to stdout, or POSTs each notification to --webhook with retries and "
            "back-off. Offsets are committed only after delivery, so nothing is lost."
        ),
    )
    parser.add_argument("--webhook", metavar="URL", help="POST notifications here (JSON)")
    parser.add_argument("--group", default="outbound-gate-notifier", help="consumer group")
    parser.add_argument("--retries", type=int, default=5, help="webhook attempts (5)")
    parser.add_argument("--backoff", type=float, default=0.5,
                        help="first back-off in seconds, doubled each retry (0.5)")
    parser.add_argument("--once", action="store_true",
                        help="stop when the topic has been read to its end")
    parser.set_defaults(run=run)


class Delivery:
    def __init__(self, webhook: str | None, retries: int, backoff: float) -> None:
        self.webhook, self.retries, self.backoff = webhook, retries, backoff

    def __call__(self, notification: dict[str, Any]) -> None:
        if self.webhook is None:
            print(json.dumps(notification), flush=True)
            return
        body = orjson.dumps(notification)
        delay = self.backoff
        error: Exception
        for attempt in range(1, self.retries + 1):
            request = urllib.request.Request(self.webhook, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    if 200 <= response.status < 300:
                        return
            except (urllib.error.URLError, OSError) as exc:
                error = exc
            else:
                error = RuntimeError(f"HTTP {response.status}")
            if attempt == self.retries:
                raise RuntimeError(f"webhook failed {attempt} times, last: {error}")
            print(f"outbound-gate notify: webhook attempt {attempt} failed ({error}); retrying "
                  f"in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)  # back-off between delivery attempts
            delay *= 2


def run(args: argparse.Namespace) -> int:
    settings = settings_for("notify")
    if settings is None or not kafka_ready("notify", settings):
        return 2
    from kafka.errors import KafkaError
    deliver = Delivery(args.webhook, args.retries, args.backoff)
    seen: OrderedDict[tuple[str, str], None] = OrderedDict()  # recent (tenant, message_id)
    try:
        # read_committed: the gate writes in transactions, aborted attempts are skipped
        from processors.runtime import kafka_clients  # Kafka only when the command needs it

        consumer = kafka_clients.consumer(settings.bootstrap_servers, settings.security,
                                          settings.topics.rejected, group_id=args.group,
                                          auto_offset_reset="earliest")
    except KafkaError as exc:
        print(f"outbound-gate notify: cannot reach Kafka: {exc}", file=sys.stderr)
        return 1
    sent = 0
    try:
        idle = 0
        while True:
            batches = consumer.poll(timeout_ms=1000, max_records=500)
            records = [r for batch in batches.values() for r in batch]
            if not records:
                idle += 1
                if args.once and idle >= 3 and consumer.assignment():
                    break
                continue
            idle = 0
            fresh = []
            for record in records:
                try:
                    rejection = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                key = (str(rejection.get("tenant_id")), str(rejection.get("message_id")))
                if key in seen:
                    continue  # the same message told twice: once is enough
                seen[key] = None
                if len(seen) > 100_000:
                    seen.popitem(last=False)
                fresh.append(rejection)
            for notification in notifications(fresh):
                deliver(notification)
                sent += 1
            consumer.commit()  # only after every notification of the batch went out
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"outbound-gate notify: {exc}; stopping without committing", file=sys.stderr)
        return 1
    finally:
        consumer.close(autocommit=False)
    print(f"outbound-gate notify: {sent} notifications", file=sys.stderr)
    return 0
