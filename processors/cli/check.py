"""outbound-gate check: decide a JSON-lines file offline with the same core as the worker."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import orjson

from processors.core.policy import PolicyError, load_policy
from processors.core.timeutil import BadTimestamp, format_rfc3339, parse_rfc3339
from processors.settings import SettingsError, from_env
from processors.tools.offline import OfflineCheck, Summary

EXIT_FAILED_ON = 3  # a decision of a --fail-on kind occurred (documented in the README)
FAIL_ON = ("rejected", "dead_letter", "monitored")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="decide a JSON-lines file offline (no Kafka)",
        description=(
            "Decide every outbound message in FILE with the gate's policy, offline. Each line is "
            "an outbound message, or an envelope {\"topic\": ..., \"key\": ..., \"value\": {...}} "
            "for any input topic (catalog entries, statuses, inbound messages, preferences), "
            "applied in file order. On those topics the value may be Meta's webhook body as Meta "
            "sent it, with \"headers\": {\"tenant_id\": ...} (else $OUTBOUND_GATE_TENANT_MAP) "
            "naming the tenant, as live. Writes one JSON line per outbound message (and one "
            "dead_letter line per bad line); a summary goes to stderr (--json: as one JSON "
            f"object). Exit 0 when the file was read to the end, {EXIT_FAILED_ON} when it was "
            "and a decision of a --fail-on kind occurred, 1 for a file that cannot be read or "
            "written, 2 for usage errors."
        ),
    )
    parser.add_argument("file", help="JSON-lines input, or - for standard input")
    parser.add_argument("--output", "-o", help="write decisions here instead of stdout")
    parser.add_argument("--fail-on", action="append", choices=FAIL_ON, default=[],
                        help=f"exit {EXIT_FAILED_ON} when any decision of this kind occurs "
                             "(rejected, dead_letter, or monitored: accepted with a "
                             "monitor-mode rule that fired); repeat for several")
    parser.add_argument("--json", action="store_true",
                        help="the summary on stderr as one JSON object (and no progress bar)")
    parser.add_argument("--at", metavar="RFC3339",
                        help="decide every message at this fixed time instead of its "
                             "scheduled_at / created_at")
    parser.add_argument("--policy", metavar="FILE",
                        help="policy document (default: $OUTBOUND_GATE_POLICY_FILE or the "
                             "packaged policy)")
    parser.add_argument("--report", metavar="FILE.html",
                        help="also write a self-contained HTML report with charts")
    parser.add_argument("--state", metavar="FILE",
                        help="JSON lines applied first (envelopes: the tenant's catalog, "
                             "statuses, preferences...), e.g. before a CSV campaign")
    campaign = parser.add_argument_group(
        "CSV campaigns (FILE ending in .csv, or --format csv): one template message per row")
    campaign.add_argument("--format", choices=["jsonl", "csv"],
                          help="input format (default: by the file name)")
    campaign.add_argument("--recipient-column", default="recipient")
    campaign.add_argument("--region-column", default="recipient_region",
                          help="optional column with a region hint for national numbers")
    campaign.add_argument("--template-column", default="template")
    campaign.add_argument("--language-column", default="language")
    campaign.add_argument("--language", help="language for every row (instead of a column)")
    campaign.add_argument("--category-column", default="category",
                          help="optional column with the category the sender believes")
    campaign.add_argument("--tenant", help="tenant for every row (else --tenant-column)")
    campaign.add_argument("--tenant-column", default="tenant_id")
    campaign.add_argument("--origin", help="origin for every row (else --origin-column, "
                                           "else api)")
    campaign.add_argument("--origin-column", default="origin")
    campaign.add_argument("--id-column", default="message_id",
                          help="optional message id column (default: row-N)")
    parser.set_defaults(run=run)


def csv_messages(source: IO[bytes], args: argparse.Namespace, created_at: str,
                 progress: Progress) -> Iterator[bytes]:
    """Each CSV row as an outbound message (JSON bytes); the header row gives the columns."""
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    rows = csv.DictReader(text)
    yield b""  # line 1 is the header
    for number, row in enumerate(rows, start=1):
        progress.update(source)
        message: dict[str, object] = {
            "schema_version": 1,
            "message_id": row.get(args.id_column) or f"row-{number}",
            "tenant_id": args.tenant or row.get(args.tenant_column) or "",
            "recipient": row.get(args.recipient_column) or "",
            "kind": "template",
            "template": {"name": row.get(args.template_column) or "",
                         "language": args.language or row.get(args.language_column) or ""},
            "origin": args.origin or row.get(args.origin_column) or "api",
            "created_at": created_at,
        }
        if row.get(args.region_column):
            message["recipient_region"] = row[args.region_column]
        if row.get(args.category_column):
            message["template"]["category"] = row[args.category_column]  # type: ignore[index]
        yield orjson.dumps(message)


class Progress:
    """A progress bar on stderr for large files: a bar on a terminal, else a line per 10%."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.enabled = size > 1_000_000
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def update(self, source: IO[bytes]) -> None:
        if not self.enabled:
            return
        try:
            done = source.tell() / self.size
        except (OSError, ValueError):
            return
        step = int(done * (50 if self.tty else 10))
        if step == self.shown:
            return
        self.shown = step
        if self.tty:
            sys.stderr.write(f"\r[{'#' * step}{' ' * (50 - step)}] {done:5.1%}")
        else:
            sys.stderr.write(f"  read {done:.0%}\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    try:
        settings = from_env()
        at = parse_rfc3339(args.at) if args.at else None
        policies = load_policy(args.policy or settings.policy_file)
    except (BadTimestamp, PolicyError, SettingsError) as exc:
        print(f"outbound-gate check: {exc}", file=sys.stderr)
        return 2
    check = OfflineCheck(policies, settings.topics, at, settings.max_message_bytes,
                         settings.tenant_map)
    rejected: list[dict[str, object]] = []
    fmt = args.format or ("csv" if args.file.lower().endswith(".csv") else "jsonl")
    with ExitStack() as stack:
        try:
            source: IO[bytes] = sys.stdin.buffer if args.file == "-" else \
                stack.enter_context(open(args.file, "rb"))
            sink: IO[bytes] = sys.stdout.buffer if not args.output else \
                stack.enter_context(open(args.output, "wb"))
            preload: IO[bytes] | None = stack.enter_context(open(args.state, "rb")) \
                if args.state else None
        except OSError as exc:
            print(f"outbound-gate check: cannot open {exc.filename}: {exc.strerror}",
                  file=sys.stderr)
            return 1
        try:
            if preload is not None:  # state first; its own decisions are written too
                for result in check.run(preload):
                    sink.write(orjson.dumps(result) + b"\n")
            size = os.fstat(source.fileno()).st_size if args.file != "-" else 0
            progress = Progress(0 if args.json else size)
            lines = csv_messages(source, args, format_rfc3339(at or time.time()), progress) \
                if fmt == "csv" else json_lines(source, progress)
            for result in check.run(lines):
                sink.write(orjson.dumps(result) + b"\n")
                if result.get("decision") == "rejected" and len(rejected) < 200:
                    rejected.append(result)
            progress.finish()
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            print(f"outbound-gate check: read/write failed: {exc}", file=sys.stderr)
            return 1
    if not args.json:
        print(check.summary.render(), file=sys.stderr)
    if args.report:
        from processors.tools.report import render

        try:
            Path(args.report).write_text(render(check.summary, rejected, args.file),
                                         encoding="utf-8")
        except OSError as exc:
            print(f"outbound-gate check: cannot write {args.report}: {exc.strerror}",
                  file=sys.stderr)
            return 1
        if not args.json:
            print(f"report written to {args.report}", file=sys.stderr)
    failed = failed_on(check.summary, args.fail_on)
    if args.json:
        print(orjson.dumps({**check.summary.as_dict(), "report": args.report,
                            "failed_on": failed}).decode(), file=sys.stderr)
    if failed:
        if not args.json:
            print(f"failing: {', '.join(failed)} occurred (--fail-on)", file=sys.stderr)
        return EXIT_FAILED_ON
    return 0


def failed_on(summary: Summary, kinds: list[str]) -> list[str]:
    """The --fail-on kinds that occurred."""
    counts = {"rejected": summary.decisions["rejected"],
              "dead_letter": summary.decisions["dead_letter"],
              "monitored": sum(summary.monitored.values())}
    return [kind for kind in FAIL_ON if kind in kinds and counts[kind]]


def json_lines(source: IO[bytes], progress: Progress) -> Iterator[bytes]:
    """The lines of a JSON-lines file, moving the progress bar as they are read."""
    for line in source:
        progress.update(source)
        yield line
