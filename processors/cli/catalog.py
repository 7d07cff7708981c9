"""outbound-gate catalog import: Meta's template list -> the catalog topic."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from processors.cli.common import kafka_ready, settings_for
from processors.core.decode import DecodeError
from processors.core.policy import templates as tpl
from processors.core.webhooks import template_list_entries


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "catalog",
        help="import a tenant's template list from Meta into the catalog topic",
        description=(
            "import FILE --tenant T reads the JSON that Meta's template-list endpoint returns "
            "(GET /<WABA id>/message_templates: {\"data\": [{\"name\", \"language\", "
            "\"status\", \"category\", ...}], \"paging\": {...}}; one page, or several pages "
            "concatenated in one file) and publishes one catalog entry per template to the "
            "catalog topic ($OUTBOUND_GATE_TOPIC_TEMPLATES, default whatsapp.templates) on "
            "KAFKA_BOOTSTRAP_SERVERS, keyed tenant:name:language and dated now, so that a new "
            "tenant starts with a full catalog. Templates whose status or category the gate has "
            "no value for are skipped and listed on stderr. --dry-run writes the entries as "
            "offline-check envelopes to stdout instead (usable with check --state)."
        ),
    )
    parser.add_argument("action", choices=["import"])
    parser.add_argument("file", help="template-list JSON, or - for standard input")
    parser.add_argument("--tenant", required=True, help="the tenant these templates belong to")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the envelopes instead of publishing them")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_for("catalog")
    if settings is None:
        return 2
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except OSError as exc:
        print(f"outbound-gate catalog: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        entries, skipped = template_list_entries(text, args.tenant, time.time())
    except (ValueError, DecodeError) as exc:
        print(f"outbound-gate catalog: {args.file}: {exc}", file=sys.stderr)
        return 1
    for problem in skipped:
        print(f"skipped {problem}", file=sys.stderr)
    topic = settings.topics.templates
    keyed = [(tpl.catalog_key(e["tenant_id"], e["name"], e["language"]), e) for e in entries]
    if args.dry_run:
        for key, entry in keyed:
            sys.stdout.write(orjson.dumps({"topic": topic, "key": key, "value": entry}).decode()
                             + "\n")
        print(f"{len(entries)} entries for tenant {args.tenant} (dry run), "
              f"{len(skipped)} skipped", file=sys.stderr)
        return 0
    if not kafka_ready("catalog", settings):
        return 2
    from kafka.errors import KafkaError  # Kafka only when publishing

    from processors.tools.kafka_io import publish

    try:
        publish(settings, topic, [(key.encode("utf-8"), orjson.dumps(entry))
                                  for key, entry in keyed])
    except KafkaError as exc:
        print(f"outbound-gate catalog: cannot publish to {settings.bootstrap_servers}: {exc}",
              file=sys.stderr)
        return 1
    print(f"published {len(entries)} entries for tenant {args.tenant} to {topic}, "
          f"{len(skipped)} skipped")
    return 0
