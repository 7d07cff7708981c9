"""outbound-gate check: decide a JSON-lines file offline with the same core as the worker."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from typing import IO

import orjson

from processors.offline import OfflineCheck
from processors.policy import PolicyError, load_policy
from processors.settings import SettingsError, from_env
from processors.timeutil import BadTimestamp, parse_rfc3339


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="decide a JSON-lines file offline (no Kafka)",
        description=(
            "Decide every outbound message in FILE with the gate's policy, offline. Each line is "
            "an outbound message, or an envelope {\"topic\": ..., \"key\": ..., \"value\": {...}} "
            "for any input topic (catalog entries, statuses, inbound messages, preferences), "
            "applied in file order. Writes one JSON line per outbound message (and one "
            "dead_letter line per bad line); a summary goes to stderr. Exit 0 when the file was "
            "read to the end, whatever was decided."
        ),
    )
    parser.add_argument("file", help="JSON-lines input, or - for standard input")
    parser.add_argument("--output", "-o", help="write decisions here instead of stdout")
    parser.add_argument("--at", metavar="RFC3339",
                        help="decide every message at this fixed time instead of its "
                             "scheduled_at / created_at")
    parser.add_argument("--policy", metavar="FILE",
                        help="policy document (default: $OUTBOUND_GATE_POLICY_FILE or the "
                             "packaged policy)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = from_env()
        at = parse_rfc3339(args.at) if args.at else None
        policies = load_policy(args.policy or settings.policy_file)
    except (BadTimestamp, PolicyError, SettingsError) as exc:
        print(f"outbound-gate check: {exc}", file=sys.stderr)
        return 2
    check = OfflineCheck(policies, settings.topics, at, settings.max_message_bytes)
    with ExitStack() as stack:
        try:
            source: IO[bytes] = sys.stdin.buffer if args.file == "-" else \
                stack.enter_context(open(args.file, "rb"))
            sink: IO[bytes] = sys.stdout.buffer if not args.output else \
                stack.enter_context(open(args.output, "wb"))
        except OSError as exc:
            print(f"outbound-gate check: cannot open {exc.filename}: {exc.strerror}",
                  file=sys.stderr)
            return 1
        try:
            for result in check.run(source):
                sink.write(orjson.dumps(result) + b"\n")
        except OSError as exc:
            print(f"outbound-gate check: read/write failed: {exc}", file=sys.stderr)
            return 1
    print(check.summary.render(), file=sys.stderr)
    return 0
