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


def env_epilog(variables: tuple[str, ...]) -> str:
    """The --help epilog naming the environment variables a command reads."""
    return "environment variables read: " + ", ".join(variables)
