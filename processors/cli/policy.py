"""outbound-gate policy validate|publish: check a policy document, or put it in force live."""

from __future__ import annotations

import argparse
import sys

from processors.cli.common import kafka_ready, settings_for
from processors.core.policy import PolicyError, load_policy


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="validate a policy document, or publish it to running workers",
        description=(
            "validate FILE checks a policy document against schemas/policy.schema.json and "
            "resolves its tenant overrides. publish FILE validates it, then writes it to the "
            "compacted policy topic ($OUTBOUND_GATE_TOPIC_POLICY, default outbound-gate.policy) "
            "on KAFKA_BOOTSTRAP_SERVERS: every worker switches to it as soon as it reads it, "
            "without a restart."
        ),
    )
    parser.add_argument("action", choices=["validate", "publish"])
    parser.add_argument("file", help="policy document (JSON)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        policies = load_policy(args.file)
    except PolicyError as exc:
        print(f"outbound-gate policy: {exc}", file=sys.stderr)
        return 1
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
