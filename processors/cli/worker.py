"""outbound-gate worker: run the Faust app against KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from processors.cli.common import kafka_ready
from processors.settings import ENV_HELP, LOG_LEVELS, Settings, SettingsError, from_env


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    width = max(map(len, ENV_HELP))
    env = "\n".join(f"  {name:<{width}}  {text}" for name, text in ENV_HELP.items())
    parser = subparsers.add_parser(
        "worker",
        help="run the live gate (Faust worker)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Consume outbound messages, decide each with the policy, and produce to the accepted, "
            "rejected and dead-letter topics. Creates missing topics first. Stops cleanly on "
            "SIGINT/SIGTERM. Exits 2 at once when Kafka refuses the TLS certificate or the SASL "
            "credentials.\n\nenvironment:\n" + env
        ),
    )
    parser.add_argument("--web-port", type=int, help=f"HTTP port (default {Settings().web_port})")
    parser.add_argument("--policy", metavar="FILE", help="policy document to use")
    parser.add_argument("--loglevel", choices=LOG_LEVELS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `check` must work without loading Faust.
    import faust
    from kafka.errors import KafkaError

    from processors.core.policy import PolicyError, load_policy
    from processors.runtime import gc_pauses
    from processors.runtime.app import create_app
    from processors.runtime.kafka_clients import advertised_url
    from processors.runtime.logs import logging_config
    from processors.runtime.topics import ensure_topics

    try:
        settings = from_env()
        overrides = {k: v for k, v in {"web_port": args.web_port, "policy_file": args.policy,
                                       "log_level": args.loglevel}.items() if v is not None}
        settings = dataclasses.replace(settings, **overrides)
        policies = load_policy(settings.policy_file)
        # Other workers forward checks here: an address they cannot reach fails now, not as
        # 503s later.
        advertised_url(settings)
    except (SettingsError, PolicyError) as exc:
        print(f"outbound-gate worker: {exc}", file=sys.stderr)
        return 2
    # A refused password or certificate stops here, at once, instead of in endless retries.
    if not kafka_ready("worker", settings):
        return 2
    try:
        ensure_topics(settings)
    except KafkaError as exc:
        print(f"outbound-gate worker: cannot reach Kafka at {settings.bootstrap_servers}: "
              f"{exc}", file=sys.stderr)
        return 1
    app = create_app(settings, policies)
    if settings.gc_freeze:  # no full garbage collection walking every cache each time
        gc_pauses.install()  # after the app is built: that is frozen at once too
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True,
                          logging_config=logging_config(settings.log_level))
    # Faust's terminal spinner sets the root logger to DEBUG so that it spins on every record:
    # every aiokafka debug line was then formatted into a record and dropped (~8% of the time).
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
