"""The messaging limit, live, without a broker: the user's partition judges, the tenant's
partition counts (through the repartition topic, or stepped into directly when this worker
holds it); the same answers as the offline check's in both ways."""

from __future__ import annotations

import pytest

from processors.core.policy import state as st
from processors.core.timeutil import format_rfc3339
from processors.runtime.engine.partitioner import partition_for
from processors.runtime.engine.records import Output
from processors.runtime.gate import recipient_state, tenant_slots
from tests.factories import inbound, policy_with
from tests.unit.runtime.gate.test_routing_links import PARTITIONS, T0, TOPICS, Cluster, send

USERS = [f"+55119123456{n:02d}" for n in range(10)]
LIMIT = 3


class Limited(Cluster):
    """A tenant limited to LIMIT new users a day; direct: the worker holds every partition
    (the tenant stage is stepped into in the same batch)."""

    def __init__(self, direct: bool) -> None:
        super().__init__()
        self.router.holder.current = policy_with(parameters__messaging_limit=LIMIT)
        if direct:
            self.router.attach(self.stores.get)

    def drain(self, now: float) -> None:
        super().drain(now)
        for store in self.stores.values():  # what a batch stepped into directly
            if store.pending:
                store.committed(store.checkpoint() + 1)


def template(cluster: Cluster, message_id: str, user: str, at: float) -> None:
    send(cluster, message_id, user, at, template={"name": "notice", "language": "en_US"})


def head_state(cluster: Cluster, user: str) -> st.RecipientState:
    key = f"acme:{user}"
    return recipient_state.load(cluster.stores[partition_for(key, PARTITIONS)], key)


@pytest.mark.parametrize("direct", [False, True], ids=["forwarded", "direct"])
def test_the_limit_holds_and_a_counted_user_or_an_open_window_needs_no_slot(
        direct: bool) -> None:
    cluster = Limited(direct)
    for index, user in enumerate(USERS[:5]):
        template(cluster, f"new-{index}", user, T0 + index)
    codes = [cluster.code(f"new-{index}") for index in range(5)]
    assert codes == [None, None, None, "MESSAGING_LIMIT_REACHED", "MESSAGING_LIMIT_REACHED"]
    # The first slot is counted from the end of its minute: retry a day after that.
    assert cluster.decisions["new-3"]["retry_after"] == format_rfc3339(T0 + 60 + 86400)
    template(cluster, "again", USERS[0], T0 + 10)  # already counted: no new slot
    assert cluster.code("again") is None
    cluster.publish(TOPICS.inbound, inbound(USERS[6], format_rfc3339(T0 - 30)), T0)
    template(cluster, "window", USERS[6], T0 + 11)  # an open window needs no slot
    assert cluster.code("window") is None
    # The refused send gave its pair budget back and its outcome is known to the user.
    refused, sent = head_state(cluster, USERS[3]), head_state(cluster, USERS[2])
    budget = st.pair_budget(refused, "")
    assert budget is None or budget[0] <= budget[1], "the refused send still owes time"
    assert st.pair_budget(sent, "") == (T0 + 2 + 6, T0 + 2)  # an accepted one owes 6 s
    assert [o for _, m, o in refused.decided if m == "new-3"] == ["MESSAGING_LIMIT_REACHED"]
    counted = head_state(cluster, USERS[0])
    assert {m: o for _, m, o in counted.decided} == {"new-0": "", "again": ""}
    # Stepped into directly, the slot is kept in the user's own record (one write fewer, and
    # the next send to the user needs no stage); forwarded, at the stage.
    stage = cluster.stores[partition_for(tenant_slots.ledger_key("acme"), PARTITIONS)]
    slot_records = [key for key, _ in stage.items()
                    if key.startswith(tenant_slots.SLOT.encode())]
    assert (counted.slot, len(slot_records)) == ((T0, 0) if direct else (None, LIMIT))
    assert head_state(cluster, USERS[3]).slot is None, "a refused send opens no slot"
    # A day and a minute later the slots have closed: new users are accepted again.
    template(cluster, "next-day", USERS[7], T0 + 60 + 86400)
    assert cluster.code("next-day") is None


def test_a_sweep_drops_closed_slots_and_ledger_minutes() -> None:
    cluster = Limited(direct=False)
    for index, user in enumerate(USERS[:2]):
        template(cluster, f"m-{index}", user, T0)
    stage = cluster.stores[partition_for(tenant_slots.ledger_key("acme"), PARTITIONS)]
    assert sum(key.startswith(tenant_slots.PREFIX) for key, _ in stage.items()) == 3
    changes = [change for chunk in cluster.router.sweep(stage, T0 + 60 + 86400)
               for change in chunk]
    stage.committed(stage.checkpoint() + 1)
    assert {change.value for change in changes} == {None}
    assert not [key for key, _ in stage.items() if key.startswith(tenant_slots.PREFIX)]


def test_the_ledger_never_counts_a_slot_shorter_than_meta() -> None:
    ledger: tenant_slots.Ledger = ()
    for clock in (T0 + 5, T0 + 30, T0 + 65, T0 + 10):  # the last one's clock stepped back
        ledger = tenant_slots.with_slot(ledger, clock)
    assert ledger == ((T0, 2), (T0 + 60, 2))
    assert tenant_slots.in_use(tenant_slots.open_ledger(ledger, T0 + 86400 + 59)) == (4, T0 + 60)
    assert tenant_slots.in_use(tenant_slots.open_ledger(ledger, T0 + 86400 + 60)) == (2, T0 + 120)
    assert tenant_slots.open_ledger(ledger, T0 + 86400 + 120) == ()




def test_a_stage_counts_its_open_minutes_once_and_knows_when_it_changed() -> None:
    ledger: tenant_slots.Ledger = ((T0, 2), (T0 + 60, 1))
    expired = tenant_slots.stage_at(ledger, T0 + 86400 + 60)  # the first minute has closed
    assert (expired.ledger, expired.used, expired.oldest, expired.changed) == (
        ((T0 + 60, 1),), 1, T0 + 120, True)
    held = tenant_slots.stage_at(ledger, T0 + 120)
    assert (held.used, held.oldest, held.changed) == (3, T0 + 60, False)
    tenant_slots.count_slot(held, T0 + 125)
    assert (held.ledger, held.used, held.oldest, held.changed) == (
        ((T0, 2), (T0 + 60, 1), (T0 + 120, 1)), 4, T0 + 60, True)
    empty = tenant_slots.stage_at((), T0)
    tenant_slots.count_slot(empty, T0 + 5)
    assert (empty.used, empty.oldest) == (1, T0 + 60)


def test_a_full_tenant_refuses_without_writing_its_ledger_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Limited(direct=True)
    for index, user in enumerate(USERS[:LIMIT]):
        template(cluster, f"new-{index}", user, T0 + index)
    written: list[bytes | None] = []
    flush = cluster.router.state.flush

    def recorded(out: list[Output]) -> None:  # the changelog records each batch writes
        before = len(out)
        flush(out)
        written.extend(o.key for o in out[before:] if o.topic == cluster.settings.changelog_topic)

    monkeypatch.setattr(cluster.router.state, "flush", recorded)
    template(cluster, "refused", USERS[5], T0 + 10)
    assert cluster.code("refused") == "MESSAGING_LIMIT_REACHED"
    assert written == [f"acme:{USERS[5]}".encode()], "only the user's record (its outcome)"
