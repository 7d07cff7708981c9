"""The route consumer's librdkafka options (no broker: the options, not a client)."""

from __future__ import annotations

import socket

import pytest

from processors.runtime.kafka_clients import (
    FETCH_MIN_BYTES,
    advertised_url,
    route_address,
    route_consumer_options,
)
from processors.settings import SettingsError, from_env


def test_route_consumer_lets_the_broker_gather_records_for_fetch_wait_ms() -> None:
    options = route_consumer_options(from_env({}), "gate-route")
    assert options["fetch.wait.max.ms"] == 10
    # More than a full batch of records must be there for the broker to answer early.
    assert options["fetch.min.bytes"] == FETCH_MIN_BYTES >= 500 * 1024
    assert options["isolation.level"] == "read_committed"
    assert options["group.id"] == "gate-route"


@pytest.mark.parametrize(("wait", "min_bytes"), [("0", 1), ("25", FETCH_MIN_BYTES)])
def test_fetch_wait_setting_reaches_the_route_consumer(wait: str, min_bytes: int) -> None:
    options = route_consumer_options(
        from_env({"OUTBOUND_GATE_FETCH_WAIT_MS": wait}), "gate-route")
    assert options["fetch.wait.max.ms"] == int(wait)
    assert options["fetch.min.bytes"] == min_bytes


def test_static_membership_takes_the_instance_id() -> None:
    static = route_consumer_options(
        from_env({"OUTBOUND_GATE_INSTANCE_ID": "outbound-gate-2"}), "gate-route")
    assert static["group.instance.id"] == "outbound-gate-2"
    assert "group.instance.id" not in route_consumer_options(from_env({}), "gate-route")


@pytest.mark.parametrize(("env", "url"), [
    ({"OUTBOUND_GATE_ADVERTISED_URL": "http://10.1.2.3:6066/"}, "http://10.1.2.3:6066"),
    ({"OUTBOUND_GATE_WEB_HOST": "192.0.2.7", "OUTBOUND_GATE_WEB_PORT": "7000"},
     "http://192.0.2.7:7000"),
    # Bound to every address: the address the broker is reached from (here, loopback).
    ({"OUTBOUND_GATE_WEB_HOST": "0.0.0.0", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"},
     "http://127.0.0.1:6066"),
    ({"OUTBOUND_GATE_WEB_HOST": "::", "KAFKA_BOOTSTRAP_SERVERS": "[::1]:9092"},
     "http://[::1]:6066"),
])
def test_the_advertised_url(env: dict[str, str], url: str) -> None:
    route_address.cache_clear()
    assert advertised_url(from_env(env)) == url


def test_a_wildcard_bind_with_no_route_to_the_broker_fails_saying_what_to_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    route_address.cache_clear()

    def unreachable(*_: object, **__: object) -> None:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    settings = from_env({"OUTBOUND_GATE_WEB_HOST": "0.0.0.0",
                         "KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092"})
    with pytest.raises(SettingsError, match="set OUTBOUND_GATE_ADVERTISED_URL"):
        advertised_url(settings)
    route_address.cache_clear()
