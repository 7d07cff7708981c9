"""outbound-gate dlq list|show|replay: inspect dead letters and re-drive them after a fix."""

from __future__ import annotations

import argparse
import base64
import sys
import uuid
from typing import Any

import orjson

from processors.cli.common import kafka_ready, settings_for
from processors.settings import KafkaSecurity


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, show and replay dead letters",
        description=(
            "list: every dead letter (partition:offset, reason, where it came from). "
            "show P:O: one letter with its raw value. replay: re-publish the raw value of the "
            "chosen letters to the topic they came from, each exactly once: the re-publication "
            "and a record of it (compacted topic <dlq>.replays) are written in one Kafka "
            "transaction, and letters already replayed are skipped, so a second replay of the "
            "same letters does nothing."
        ),
    )
    parser.add_argument("action", choices=["list", "show", "replay"])
    parser.add_argument("letters", nargs="*", metavar="P:O",
                        help="dead letters by dead-letter-topic partition:offset")
    parser.add_argument("--reason", help="only letters with this reason (list, replay)")
    parser.add_argument("--all", action="store_true", help="replay every (matching) letter")
    parser.add_argument("--dry-run", action="store_true", help="replay: say what would be sent")
    parser.add_argument("--json", action="store_true",
                        help="list: one JSON object per letter on stdout (at, reason, topic, "
                             "partition, offset, error, failed_at), no raw value")
    parser.set_defaults(run=run)


def _read_all(bootstrap: str, topic: str, security: KafkaSecurity) -> list[tuple[str, Any]]:
    """(partition:offset, record) for every record of a topic, from the beginning."""
    from kafka import TopicPartition

    # read_committed: an aborted replay must not count as done in the ledger.
    from processors.runtime import kafka_clients  # Kafka only when the command needs it

    consumer = kafka_clients.consumer(bootstrap, security, group_id=None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    if not partitions:
        consumer.close()
        return []
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    records: list[tuple[str, Any]] = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for tp, batch in consumer.poll(timeout_ms=1000).items():
            records += [(f"{tp.partition}:{r.offset}", r) for r in batch]
    consumer.close()
    return records


def _letters(bootstrap: str, topic: str,
             security: KafkaSecurity) -> list[tuple[str, dict[str, Any]]]:
    letters = []
    for where, record in _read_all(bootstrap, topic, security):
        try:
            letters.append((where, orjson.loads(record.value)))
        except orjson.JSONDecodeError:
            continue  # not a letter the gate wrote
    return letters


def run(args: argparse.Namespace) -> int:
    settings = settings_for("dlq")
    if settings is None or not kafka_ready("dlq", settings):
        return 2
    from kafka.errors import KafkaError
    dlq = settings.topics.dlq
    try:
        letters = [(w, letter) for w, letter in _letters(settings.bootstrap_servers, dlq,
                                                         settings.security)
                   if not args.reason or letter.get("reason") == args.reason]
        if args.action == "list" and args.json:
            for where, letter in letters:
                print(orjson.dumps({"at": where, **{name: letter.get(name) for name in (
                    "reason", "topic", "partition", "offset", "error", "failed_at")}}).decode())
            return 0
        if args.action == "list":
            for where, letter in letters:
                print(f"{where}\t{letter.get('reason')}\tfrom {letter.get('topic')}:"
                      f"{letter.get('partition')}:{letter.get('offset')}\t"
                      f"{str(letter.get('error'))[:100]}")
            print(f"{len(letters)} dead letters in {dlq}", file=sys.stderr)
            return 0
        chosen = {w: letter for w, letter in letters if args.all or w in args.letters}
        missing = [w for w in args.letters if w not in chosen]
        if missing:
            print(f"outbound-gate dlq: no dead letter at {', '.join(missing)}", file=sys.stderr)
            return 1
        if args.action == "show":
            for where, letter in chosen.items():
                raw = base64.b64decode(letter["value_base64"] or "")
                try:
                    shown = raw.decode("utf-8")
                except UnicodeDecodeError:
                    shown = f"(not UTF-8, base64) {letter['value_base64']}"
                print(orjson.dumps({**letter, "at": where}, option=orjson.OPT_INDENT_2).decode())
                print(f"value: {shown}")
            return 0
        if not chosen:
            print("outbound-gate dlq: name letters as P:O, or use --all", file=sys.stderr)
            return 2
        return replay(settings.bootstrap_servers, dlq, chosen, args.dry_run, settings.security)
    except KafkaError as exc:
        print(f"outbound-gate dlq: Kafka at {settings.bootstrap_servers}: {exc}",
              file=sys.stderr)
        return 1


def replay(bootstrap: str, dlq: str, chosen: dict[str, dict[str, Any]], dry_run: bool,
           security: KafkaSecurity | None = None) -> int:
    from processors.runtime.topics import create_missing

    ledger = f"{dlq}.replays"
    security = security or KafkaSecurity()
    create_missing(bootstrap, [ledger], 1, compacted=[ledger], security=security)
    done = {record.key.decode() for _, record in _read_all(bootstrap, ledger, security)
            if record.key is not None and record.value is not None}
    todo = {w: letter for w, letter in chosen.items() if w not in done}
    skipped = len(chosen) - len(todo)
    if dry_run:
        for where, letter in todo.items():
            print(f"would replay {where} to {letter['topic']}")
        print(f"{len(todo)} to replay, {skipped} already replayed before", file=sys.stderr)
        return 0
    if not todo:
        print(f"0 replayed, {skipped} already replayed before", file=sys.stderr)
        return 0
    from processors.runtime import kafka_clients  # Kafka only when the command needs it

    producer = kafka_clients.producer(bootstrap, security,
                                      transactional_id=f"outbound-gate-dlq-{uuid.uuid4().hex}")
    producer.init_transactions()
    producer.begin_transaction()
    try:
        for where, letter in todo.items():
            key = letter["key"].encode() if letter.get("key") is not None else None
            value = base64.b64decode(letter["value_base64"]) \
                if letter.get("value_base64") is not None else None
            headers = [(name, text.encode()) for name, text in
                       (letter.get("headers") or {}).items() if text is not None]
            producer.send(letter["topic"], key=key, value=value, headers=headers or None)
            # The ledger entry commits (or aborts) with the re-publication itself.
            producer.send(ledger, key=where.encode(), value=orjson.dumps(
                {"topic": letter["topic"], "partition": letter["partition"],
                 "offset": letter["offset"], "reason": letter["reason"]}))
        producer.commit_transaction()
    except Exception:
        producer.abort_transaction()
        raise
    finally:
        producer.close()
    for where, letter in todo.items():
        print(f"replayed {where} to {letter['topic']}")
    print(f"{len(todo)} replayed, {skipped} already replayed before", file=sys.stderr)
    return 0
