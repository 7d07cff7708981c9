"""outbound-gate policy validate|publish|export: check a policy document, put it in force live,
or save the one in force."""

from __future__ import annotations

import argparse
import sys

import orjson

from processors.cli.common import kafka_ready, settings_for
from processors.core.policy import PolicyError, load_policy, parse_policy


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="validate a policy document, publish it to running workers, or export the one "
             "in force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "validate FILE checks a policy document against schemas/policy.schema.json and "
            "resolves its tenant overrides.\npublish FILE validates it, then writes it to the "
            "compacted policy topic ($OUTBOUND_GATE_TOPIC_POLICY, default outbound-gate.policy) "
            "on KAFKA_BOOTSTRAP_SERVERS: every worker switches to it as soon as it reads it, "
            "without a restart. To roll back, publish the previous document again.\n"
            "export FILE writes the document in force on the policy topic to FILE (- for "
            "standard output), byte for byte: a backup that `publish` takes back.\n\n"
            "environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL and the other KAFKA_* "
            "variables of `outbound-gate worker --help`, OUTBOUND_GATE_TOPIC_POLICY"
        ),
    )
    parser.add_argument("action", choices=["validate", "publish", "export"])
    parser.add_argument("file", help="policy document (JSON); for export, where to write it")
    parser.add_argument("--json", action="store_true",
                        help="validate: the verdict as one JSON object on stdout "
                             '({"valid": true, "id", "version", "tenants"} or '
                             '{"valid": false, "error"}), exit code as without it')
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        return export(args.file)
    as_json = args.json and args.action == "validate"
    try:
        policies = load_policy(args.file)
    except PolicyError as exc:
        if as_json:
            print(orjson.dumps({"valid": False, "error": str(exc)}).decode())
        else:
            print(f"outbound-gate policy: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps({"valid": True, "id": policies.id, "version": policies.version,
                            "tenants": sorted(policies.tenants)}).decode())
        return 0
    tenants = ", ".join(sorted(policies.tenants)) or "none"
    print(f"valid: policy {policies.id} version {policies.version} "
          f"(tenant overrides: {tenants})")
    if args.action == "validate":
        return 0
    settings = settings_for("policy")
    if settings is None or not kafka_ready("policy", settings):
        return 2
    from kafka.errors import KafkaError  # Kafka only when publishing

    from processors.tools.kafka_io import publish

    try:
        with open(args.file, "rb") as source:
            [metadata] = publish(settings, settings.topics.policy,
                                 [(policies.id.encode("utf-8"), source.read())], timeout=30)
    except KafkaError as exc:
        print(f"outbound-gate policy: cannot publish to {settings.bootstrap_servers}: {exc}",
              file=sys.stderr)
        return 1
    print(f"published to {metadata.topic} partition {metadata.partition} offset "
          f"{metadata.offset}")
    return 0


def export(path: str) -> int:
    settings = settings_for("policy")
    if settings is None or not kafka_ready("policy", settings):
        return 2
    from kafka.errors import KafkaError  # Kafka only when exporting

    from processors.tools.kafka_io import read_to_end

    topic = settings.topics.policy
    try:
        records = read_to_end(settings, topic)
    except (KafkaError, TimeoutError) as exc:
        print(f"outbound-gate policy: cannot read {topic} at {settings.bootstrap_servers}: "
              f"{exc}", file=sys.stderr)
        return 1
    # What the workers hold: the newest record that is a valid document (they refuse others).
    in_force, refused = None, 0
    for _, value in records:
        try:
            if value is not None:
                parse_policy(orjson.loads(value))
                in_force, refused = value, 0
                continue
        except (orjson.JSONDecodeError, PolicyError):
            pass
        refused += 1
    if in_force is None:
        print(f"outbound-gate policy: {topic} holds no valid policy: the workers use their "
              f"policy file or the packaged one", file=sys.stderr)
        return 1
    if path == "-":
        sys.stdout.buffer.write(in_force)
    else:
        with open(path, "wb") as target:
            target.write(in_force)
        print(f"exported the policy in force from {topic} to {path}")
    if refused:
        print(f"outbound-gate policy: {refused} newer record(s) on {topic} were refused by the "
              f"workers; once compacted away, the exported one is gone from the topic: publish "
              f"it again", file=sys.stderr)
    return 0
