"""The producer helper for upstream services (processors.tools.client), without a broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from processors.runtime import kafka_clients
from processors.runtime.routing import recipient_key
from processors.tools.client import InvalidMessage, InvalidRecipient, OutboundProducer, gate_key
from tests.factories import message


@pytest.mark.parametrize(("recipient", "region", "key"), [
    ("+14165550123", None, "acme:+14165550123"),
    ("14165550123", None, "acme:+14165550123"),  # Meta's wa_id
    ("(416) 555-0123", "CA", "acme:+14165550123"),
    ("US.13491208655302741918", None, "acme:US.13491208655302741918"),
    ("US.ENT.11815799212886844830", None, "acme:US.ENT.11815799212886844830"),
    ("BR.888", "GB", "acme:BR.888"),  # a BSUID's region is its prefix, not the hint
])
def test_gate_key_is_the_key_the_gate_keeps_state_under(recipient: str, region: str | None,
                                                        key: str) -> None:
    doc = message(recipient=recipient, recipient_region=region)
    assert gate_key(doc) == key
    assert recipient_key("outbound_message", doc) == key  # no repartition hop


@pytest.mark.parametrize("recipient", ["+1202555", "ZZ.1349", "US.", "US.ENT.", "US.12-34"])
def test_invalid_recipients_are_refused(recipient: str) -> None:
    with pytest.raises(InvalidRecipient, match="m-1"):
        gate_key(message(recipient=recipient))


class FakeProducer:
    """Stands in for kafka-python's KafkaProducer: records what is sent."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        metadata = SimpleNamespace(partition=3, offset=len(self.sent) - 1)
        return SimpleNamespace(get=lambda timeout: metadata)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_send_to_a_bsuid_is_keyed_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_clients, "KafkaProducer", FakeProducer)
    with OutboundProducer("127.0.0.1:9", topic="out") as gate:
        assert gate.send(message(recipient="BR.1502576394655843",
                                 template={"name": "notice", "language": "pt_BR"})) == (3, 0)
        with pytest.raises(InvalidRecipient):
            gate.send(message(message_id="m-2", recipient="XX.1"))
        with pytest.raises(InvalidMessage):
            gate.send(message(message_id="m-3", recipient="B" * 141))
        producer = gate._producer
    assert isinstance(producer, FakeProducer)
    assert producer.config["enable_idempotence"] is True
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("out", b"acme:BR.1502576394655843")
    assert b'"recipient":"BR.1502576394655843"' in value
