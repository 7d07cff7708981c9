"""What every command does before it talks to Kafka: read the settings, then one connection
that turns a refused password or an untrusted certificate into one line (exit code 2)."""

from __future__ import annotations

import sys

from processors.settings import Settings, SettingsError, from_env


def fail(command: str, problem: object) -> None:
    print(f"outbound-gate {command}: {problem}", file=sys.stderr)


def settings_for(command: str) -> Settings | None:
    """The settings from the environment; None (the error printed) when they are unusable."""
    try:
        return from_env()
    except SettingsError as exc:
        fail(command, exc)
        return None


def kafka_ready(command: str, settings: Settings) -> bool:
    """The brokers accept this client's security; else the cause is printed."""
    from processors.runtime.kafka_security import access_problem  # Kafka only when needed

    problem = access_problem(settings.bootstrap_servers, settings.security)
    if problem:
        fail(command, problem)
        return False
    return True


KAFKA = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
         "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD(_FILE)", "KAFKA_SSL_* (CAFILE, CERTFILE, "
         "KEYFILE, KEY_PASSWORD, CHECK_HOSTNAME)")
# Command -> the environment variables it reads, named by its --help (the worker lists all).
COMMAND_ENV: dict[str, tuple[str, ...]] = {
    "check": ("OUTBOUND_GATE_POLICY_FILE (unless --policy)", "OUTBOUND_GATE_TENANT_MAP",
              "OUTBOUND_GATE_MAX_MESSAGE_BYTES", "OUTBOUND_GATE_TOPIC_<NAME> (envelopes' topics)",
              "OUTBOUND_GATE_SCHEMAS_DIR"),
    "demo": (*KAFKA, "OUTBOUND_GATE_TOPIC_<NAME>", "OUTBOUND_GATE_WEB_PORT",
             "and every other variable of the worker it starts"),
    "policy": (*KAFKA, "OUTBOUND_GATE_TOPIC_POLICY (publish, export)"),
    "catalog": (*KAFKA, "OUTBOUND_GATE_TOPIC_TEMPLATES", "OUTBOUND_GATE_PARTITIONS",
                "OUTBOUND_GATE_REPLICATION_FACTOR"),
    "loadgen": (*KAFKA, "OUTBOUND_GATE_TOPIC_<NAME>", "OUTBOUND_GATE_PARTITIONS",
                "OUTBOUND_GATE_REPLICATION_FACTOR"),
    "dlq": (*KAFKA, "OUTBOUND_GATE_TOPIC_DLQ (the notifier's: OUTBOUND_GATE_TOPIC_DLQ="
            "outbound.notifications.dlq)"),
    "notify": (*KAFKA, "OUTBOUND_GATE_TOPIC_REJECTED", "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_DLQ",
               "OUTBOUND_GATE_TOPIC_NOTIFICATIONS_SETTLED", "OUTBOUND_GATE_PARTITIONS",
               "OUTBOUND_GATE_REPLICATION_FACTOR"),
}


def env_epilog(command: str) -> str:
    """The --help epilog naming the environment variables a command reads."""
    return "environment variables read: " + "; ".join(COMMAND_ENV[command])
