"""The route consumer's librdkafka options (no broker: the options, not a client)."""

from __future__ import annotations

import pytest

from processors.runtime.kafka_clients import FETCH_MIN_BYTES, route_consumer_options
from processors.settings import from_env


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
