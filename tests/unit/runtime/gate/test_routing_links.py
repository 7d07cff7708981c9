"""The live path of linked identities, without a broker: several partitions' stores, one
GateProcessor, and the repartition topic as a queue. A number and its BSUID live in different
partitions; the decisions must be the ones the offline check makes over the same events."""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from processors.core import contracts
from processors.core.policy import load_policy
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.runtime.catalog import CatalogReplica
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Output, Record
from processors.runtime.engine.state_store import MemoryBackend, PartitionStore
from processors.runtime.gate.processor import GateProcessor
from processors.runtime.metrics import GateMetrics
from processors.runtime.policy_feed import PolicyHolder
from processors.settings import Settings, Topics
from processors.tools.offline import OfflineCheck
from tests.factories import inbound, message, preference, status, template_entry

PARTITIONS = 4
TOPICS = Topics()
T0 = parse_rfc3339("2026-12-01T12:00:00Z")


def on_other_partitions(tenant: str, number: str, *candidates: str) -> list[str]:
    """BSUIDs among the candidates whose partition differs from the number's."""
    home = partition_for(f"{tenant}:{number}", PARTITIONS)
    return [c for c in candidates if partition_for(f"{tenant}:{c}", PARTITIONS) != home]


NUMBER = "+5511912345678"
BSUIDS = on_other_partitions("acme", NUMBER, *(f"BR.{n}" for n in range(1000, 1100)))
X1, X2 = BSUIDS[0], BSUIDS[1]


class Cluster:
    """The route step of every partition, run to quiescence after each input record."""

    def __init__(self, seed: int | None = None) -> None:
        self.settings = Settings(partitions=PARTITIONS)
        catalog = CatalogReplica()
        for entry in (template_entry("promo", "MARKETING"), template_entry("otp", "AUTHENTICATION"),
                      template_entry("notice", "UTILITY")):
            catalog.data[f"acme:{entry['name']}:en_US"] = (entry,)
        self.router = GateProcessor(self.settings, PolicyHolder(load_policy()), catalog,
                             GateMetrics(CollectorRegistry(), 100))
        self.stores = {p: PartitionStore(p, MemoryBackend()) for p in range(PARTITIONS)}
        self.queue: deque[Record] = deque()
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.decisions: dict[str, dict[str, Any]] = {}
        self.envelopes: Counter[str] = Counter()  # kind -> how many crossed the topic
        self.rng = random.Random(seed) if seed is not None else None

    def publish(self, topic: str, value: dict[str, Any], now: float) -> None:
        # Upstream keys by whatever it has: a random partition is the hardest case.
        partition = self.rng.randrange(PARTITIONS) if self.rng else 0
        # Meta's bodies name no tenant: the receiver's tenant_id header does.
        headers = (("tenant_id", b"acme"),) if topic == TOPICS.webhooks else ()
        self.enqueue(topic, partition, orjson.dumps(value), headers)
        self.drain(now)

    def enqueue(self, topic: str, partition: int, value: bytes | None,
                headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        self.queue.append(Record(topic, partition, offset, None, value, 0.0, headers))

    def drain(self, now: float) -> None:
        while self.queue:
            record = self.queue.popleft()
            store = self.stores[record.partition]
            out: list[Output] = []
            self.router.handle(record, store, out, Counter(), now)
            self.router.flush(out)
            store.committed(store.checkpoint() + 1)
            for output in out:
                if output.topic == self.settings.repartition_topic:
                    assert output.partition is not None
                    # Every envelope the gate writes follows its contract.
                    problem = contracts.first_error("repartition_envelope",
                                                    orjson.loads(output.value or b"{}"))
                    assert problem is None, problem
                    self.envelopes[orjson.loads(output.value or b"{}")["kind"]] += 1
                    self.enqueue(output.topic, output.partition, output.value)
                elif output.topic in (TOPICS.accepted, TOPICS.rejected):
                    decision = orjson.loads(output.value or b"{}")
                    self.decisions[decision["message_id"]] = decision

    def code(self, message_id: str) -> str | None:
        decision = self.decisions[message_id]
        return decision.get("error_code") if "error_code" in decision else None


def send(cluster: Cluster, message_id: str, recipient: str, at: float, **fields: Any) -> None:
    cluster.publish(TOPICS.outbound, message(message_id=message_id, recipient=recipient,
                                             created_at=format_rfc3339(at), **fields), at)


def test_opt_out_of_the_bsuid_alone_blocks_marketing_to_the_number() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.preferences, preference(X1, "stop", format_rfc3339(T0 - 60)), T0)
    linking = {**inbound(NUMBER[1:], format_rfc3339(T0 - 30)), "user_id": X1}
    cluster.publish(TOPICS.inbound, linking, T0)
    send(cluster, "to-number", NUMBER, T0)
    send(cluster, "free-form-to-bsuid", X1, T0, kind="free_form", template=None)
    assert cluster.code("to-number") == "MARKETING_OPTED_OUT"
    assert cluster.code("free-form-to-bsuid") is None
    enrichment = cluster.decisions["free-form-to-bsuid"]["enrichment"]
    assert enrichment["recipient_kind"] == "bsuid"
    assert enrichment["recipient_e164"] == NUMBER  # known through the link


def test_state_after_the_link_reaches_the_other_identity() -> None:
    cluster = Cluster()
    linking = {**status(NUMBER[1:], None, format_rfc3339(T0 - 100), state="delivered"),
               "user_id": X1}
    cluster.publish(TOPICS.statuses, linking, T0)
    cluster.publish(TOPICS.statuses, status(X1, 131049, format_rfc3339(T0 - 50)), T0)
    send(cluster, "cooled-number", NUMBER, T0)
    cluster.publish(TOPICS.inbound, inbound(NUMBER, format_rfc3339(T0 - 40)), T0)
    send(cluster, "bsuid-window", X1, T0, kind="free_form", template=None)
    # The window the number opened lifts the cool-down the BSUID's 131049 started.
    send(cluster, "marketing-in-window", X1, T0 + 1)
    assert cluster.code("cooled-number") == "USER_MARKETING_TEMPLATE_LIMIT"
    assert cluster.code("bsuid-window") is None
    assert cluster.code("marketing-in-window") is None


def test_a_call_from_the_bsuid_opens_the_numbers_window_live() -> None:
    cluster = Cluster()
    linking = {**status(NUMBER[1:], None, format_rfc3339(T0 - 100), state="delivered"),
               "user_id": X1}
    cluster.publish(TOPICS.statuses, linking, T0)
    send(cluster, "before-call", NUMBER, T0, kind="free_form", template=None)
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "calls", "value": {"calls": [{
            "id": "wacid.1", "from_user_id": X1, "event": "connect",
            "timestamp": str(int(T0 - 30)), "direction": "USER_INITIATED"}]}}]}]}
    cluster.publish(TOPICS.webhooks, body, T0)
    send(cluster, "after-call", NUMBER, T0 + 1, kind="free_form", template=None)
    assert cluster.code("before-call") == "OUTSIDE_SERVICE_WINDOW"
    assert cluster.code("after-call") is None


def test_a_130472_for_the_bsuid_holds_marketing_to_the_number_live() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.statuses, status(X1, 130472, format_rfc3339(T0 - 90)), T0)
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER[1:], format_rfc3339(T0 - 80)),
                                     "user_id": X1}, T0)
    send(cluster, "held", NUMBER, T0)
    send(cluster, "utility", NUMBER, T0, template={"name": "notice", "language": "en_US"})
    delivered = {**status(X1, None, format_rfc3339(T0 - 10), state="delivered"),
                 "category": "MARKETING"}
    cluster.publish(TOPICS.statuses, delivered, T0)
    send(cluster, "released", NUMBER, T0 + 1)
    assert cluster.code("held") == "USER_IN_MARKETING_EXPERIMENT"
    assert cluster.code("utility") is None
    assert cluster.code("released") is None


def test_a_newer_link_of_the_number_releases_the_old_bsuid_with_its_state() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.preferences, preference(X1, "stop", format_rfc3339(T0 - 90)), T0)
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 80)), "user_id": X1},
                    T0)
    send(cluster, "linked", NUMBER, T0)
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 70)), "user_id": X2},
                    T0)
    send(cluster, "relinked", NUMBER, T0 + 1)
    send(cluster, "old-bsuid", X1, T0 + 2)
    assert cluster.code("linked") == "MARKETING_OPTED_OUT"
    assert cluster.code("relinked") is None  # X1's opt-out went with X1
    assert cluster.code("old-bsuid") == "MARKETING_OPTED_OUT"
    assert cluster.decisions["old-bsuid"]["enrichment"]["recipient_e164"] is None


def test_pair_budget_is_shared_by_both_identities() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 10)), "user_id": X1},
                    T0)
    for n in range(45):
        send(cluster, f"b{n}", NUMBER if n % 2 else X1, T0,
             template={"name": "notice", "language": "en_US"})
    send(cluster, "over", X1, T0 + 1, template={"name": "notice", "language": "en_US"})
    assert all(cluster.code(f"b{n}") is None for n in range(45))
    assert cluster.code("over") == "PAIR_RATE_LIMITED"
    assert cluster.decisions["over"]["retry_after"] == format_rfc3339(T0 + 6)


def test_a_redelivered_message_to_either_identity_is_decided_once() -> None:
    cluster = Cluster()
    cluster.publish(TOPICS.inbound, {**inbound(NUMBER, format_rfc3339(T0 - 10)), "user_id": X1},
                    T0)
    send(cluster, "same", X1, T0)
    first = cluster.decisions.pop("same")
    send(cluster, "same", NUMBER, T0 + 1)
    assert "same" not in cluster.decisions and first["message_id"] == "same"


IDENTITIES = [NUMBER, "+5511912345679", X1, X2, BSUIDS[2]]
NUMBERS = IDENTITIES[:2]


def random_events(rng: random.Random, count: int, changes: bool = False
                  ) -> list[tuple[str, dict[str, Any]]]:
    """Messages and state events over two numbers and three BSUIDs, with links between them,
    in time order (live decides at the time it reads a record); with changes, number changes
    between the two numbers too (either way, so some change back)."""
    events: list[tuple[str, dict[str, Any]]] = []
    clock = T0
    for n in range(count):
        clock += rng.choice([0.0, 1.0, 3.0, 7.0, 600.0, 40_000.0])
        stamp = format_rfc3339(clock - rng.choice([0.0, 5.0, 120.0]))
        who = rng.choice(IDENTITIES)
        roll = rng.random()
        if roll < 0.55:
            template = rng.choice(["promo", "otp", "notice", None])
            fields: dict[str, Any] = {"kind": "free_form", "template": None} if template is None \
                else {"template": {"name": template, "language": "en_US"}}
            if rng.random() < 0.3:
                fields["business_number"] = "+15550001"
            events.append((TOPICS.outbound, message(
                message_id=f"r{n}", recipient=who, created_at=format_rfc3339(clock), **fields)))
            continue
        if changes and roll < 0.6:
            old, new = rng.sample(list(NUMBERS), 2)
            events.append((TOPICS.inbound, {**inbound(new, stamp), "channel": "system",
                                            "previous_number": old}))
            continue
        if roll < 0.7:
            document: dict[str, Any] = inbound(who, stamp)
            topic = TOPICS.inbound
        elif roll < 0.85:
            code = rng.choice([131049, 131050, 130472, None])
            document = status(who, code, stamp, state="failed" if code else "delivered")
            if code is None and rng.random() < 0.5:
                document["category"] = "MARKETING"  # a delivered marketing message
            topic = TOPICS.statuses
        else:
            document = preference(who, rng.choice(["stop", "resume"]), stamp)
            topic = TOPICS.preferences
        if who in NUMBERS and rng.random() < 0.6:
            document["user_id"] = rng.choice(IDENTITIES[2:])
        events.append((topic, document))
    return events


@pytest.mark.parametrize("changes", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_live_linking_decides_as_the_offline_check(seed: int, changes: bool) -> None:
    rng = random.Random(seed)
    events = random_events(rng, 160, changes)
    cluster = Cluster(seed)
    check = OfflineCheck(load_policy())
    lines = [orjson.dumps({"topic": TOPICS.templates, "value": entry}) for entry in (
        template_entry("promo", "MARKETING"), template_entry("otp", "AUTHENTICATION"),
        template_entry("notice", "UTILITY"))]
    offline: dict[str, str | None] = {}
    for topic, document in events:
        if topic == TOPICS.outbound:
            now = parse_rfc3339(document["created_at"])
            lines.append(orjson.dumps(document))
        else:
            now = parse_rfc3339(document["timestamp"])
            lines.append(orjson.dumps({"topic": topic, "value": document}))
        cluster.publish(topic, document, now)
    for result in check.run(lines):
        offline[result["message_id"]] = result["error_code"]
    live = {message_id: cluster.code(message_id) for message_id in offline}
    assert live == offline
    assert len(offline) > 50 and len(set(offline.values())) > 3


def test_the_newest_link_wins_after_a_stale_one_live() -> None:
    cluster = Cluster()
    other = "+5511912345679"
    link = [(NUMBER, -4 * 3600), (other, -2 * 3600), (NUMBER, -3 * 3600), (NUMBER, -3600)]
    cluster.publish(TOPICS.preferences, preference(X1, "stop", format_rfc3339(T0 - 3 * 3600)),
                    T0)
    for number, offset in link:  # to the number, to the other, stale, then newest
        cluster.publish(TOPICS.statuses, {**status(number, None, format_rfc3339(T0 + offset),
                                                   state="read"), "user_id": X1}, T0)
    send(cluster, "number", NUMBER, T0)
    send(cluster, "other-number", other, T0)
    assert cluster.code("number") == "MARKETING_OPTED_OUT"
    assert cluster.code("other-number") is None
