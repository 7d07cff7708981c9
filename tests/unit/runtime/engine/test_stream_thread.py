"""processors.runtime.engine.stream_thread: how the loop reads a batch (and puts back a read
torn by a rebalance), and its state: the legal transitions, an illegal one refused, `ready` only
while RUNNING. The Kafka loop itself is covered end to end (tests/e2e) and by make chaos."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from processors.runtime import kafka_clients
from processors.runtime.engine import stream_thread
from processors.runtime.engine.stream_thread import (
    TRANSITIONS,
    IllegalTransition,
    RouteLoop,
    State,
)
from processors.runtime.metrics import GateMetrics
from processors.settings import Settings

TOPIC = "outbound"


def route_loop(tmp_path: Any, **settings: Any) -> RouteLoop:
    router: Any = SimpleNamespace(released=lambda partitions: None)  # all on_revoke asks
    return RouteLoop(Settings(data_dir=str(tmp_path), app_id="unit", **settings), router,
                     GateMetrics(CollectorRegistry(), 10), lambda: True)


def in_state(tmp_path: Any, state: State) -> RouteLoop:
    loop = route_loop(tmp_path)
    loop.state = state
    return loop


LEGAL = [(old, new) for old, targets in TRANSITIONS.items() for new in targets]
LIVE = [State.CREATED, State.STARTING, State.PARTITIONS_REVOKED, State.PARTITIONS_ASSIGNED,
        State.RUNNING]
ILLEGAL = [(old, new) for old in LIVE for new in State if new not in TRANSITIONS[old]]


def test_the_table_names_every_state_and_a_live_state_can_always_shut_down() -> None:
    assert set(TRANSITIONS) == set(State)
    assert all(State.PENDING_SHUTDOWN in TRANSITIONS[state] for state in LIVE)
    assert TRANSITIONS[State.PENDING_SHUTDOWN] == {State.DEAD}
    # Never ready without an assignment, never back to starting, never dead without closing.
    assert {(State.CREATED, State.RUNNING), (State.STARTING, State.RUNNING),
            (State.RUNNING, State.STARTING), (State.RUNNING, State.DEAD),
            (State.PARTITIONS_REVOKED, State.RUNNING)} <= set(ILLEGAL)


@pytest.mark.parametrize(("old", "new"), LEGAL, ids=lambda s: s.name)
def test_a_legal_transition_is_made_and_logged(tmp_path: Any, caplog: pytest.LogCaptureFixture,
                                               old: State, new: State) -> None:
    loop = in_state(tmp_path, old)
    with caplog.at_level(logging.INFO, logger=stream_thread.__name__):
        assert loop.transition(new) is True
    assert loop.state is new
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "stream_state"]
    assert (record.__dict__["from"], record.__dict__["to"]) == (old.value, new.value)


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: s.name)
def test_an_illegal_transition_raises_and_changes_nothing(tmp_path: Any, old: State,
                                                          new: State) -> None:
    loop = in_state(tmp_path, old)
    with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
        loop.transition(new)
    assert loop.state is old


IGNORED = [(State.PENDING_SHUTDOWN, new) for new in State if new is not State.DEAD] + [
    (State.DEAD, new) for new in State]


@pytest.mark.parametrize(("old", "new"), IGNORED, ids=lambda s: s.name)
def test_shutting_down_any_change_but_to_dead_is_ignored(tmp_path: Any, old: State,
                                                         new: State) -> None:
    # consumer.close() revokes the partitions inside close(), after PENDING_SHUTDOWN.
    loop = in_state(tmp_path, old)
    assert loop.transition(new) is False
    assert loop.state is old


def test_dead_follows_only_pending_shutdown(tmp_path: Any) -> None:
    assert in_state(tmp_path, State.PENDING_SHUTDOWN).transition(State.DEAD) is True
    for old in LIVE:
        with pytest.raises(IllegalTransition):
            in_state(tmp_path, old).transition(State.DEAD)


def test_ready_only_while_running(tmp_path: Any) -> None:
    assert {state for state in State if in_state(tmp_path, state).ready} == {State.RUNNING}


def test_a_rebalance_and_a_close_walk_the_states_and_ready_follows(tmp_path: Any) -> None:
    loop = route_loop(tmp_path)
    announced: list[tuple[int, ...]] = []
    loop.announce = announced.append
    loop.tasks = SimpleNamespace(assign=lambda numbers: 0.0,  # type: ignore[assignment]
                                 close_all=lambda: None)
    loop.transition(State.STARTING)
    consumer: Any = SimpleNamespace(committed=lambda partitions, timeout: partitions)
    seen: list[tuple[Any, ...]] = []
    loop.on_assign(consumer, [])  # no partitions: ready all the same
    seen.append((loop.state, loop.ready))
    loop.on_revoke(consumer, [])
    seen.append((loop.state, loop.ready))
    loop.on_assign(consumer, [SimpleNamespace(partition=3)])
    seen.append((loop.state, loop.ready, loop.assigned))
    loop.close()
    seen.append((loop.state, loop.ready))
    assert seen == [(State.RUNNING, True), (State.PARTITIONS_REVOKED, False),
                    (State.RUNNING, True, (3,)), (State.DEAD, False)]
    assert announced == [(), (), (), (), (3,), ()]


class Message:
    """A consumed record, as far as poll looks at it."""

    def __init__(self, partition: int, offset: int) -> None:
        self._where = (partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._where[0]

    def offset(self) -> int:
        return self._where[1]


class ScriptedConsumer:
    """consume() hands out the next scripted read (and runs its callback first, as librdkafka
    runs rebalance callbacks inside consume); it records how it was called."""

    def __init__(self, reads: list[tuple[list[Message], Any]], partitions: int = 2) -> None:
        self.reads = reads
        self.calls: list[tuple[int, float]] = []
        self.seeks: dict[tuple[str, int], int] = {}
        self.partitions = partitions

    def consume(self, limit: int, timeout: float) -> list[Message]:
        self.calls.append((limit, timeout))
        assert self.reads, f"consume({limit}, {timeout}) past the script"
        messages, callback = self.reads.pop(0)
        if callback is not None:
            callback()
        assert len(messages) <= limit
        return messages

    def assignment(self) -> list[Any]:
        return [SimpleNamespace(topic=TOPIC, partition=n) for n in range(self.partitions)]

    def seek(self, tp: Any) -> None:
        self.seeks[(tp.topic, tp.partition)] = tp.offset


def polled(tmp_path: Any, consumer: ScriptedConsumer) -> list[tuple[int, int]]:
    loop = route_loop(tmp_path, batch_records=5)
    loop.consumer = consumer
    return [(m.partition(), m.offset()) for m in loop.poll()]


def test_a_batch_is_what_has_arrived(tmp_path: Any) -> None:
    consumer = ScriptedConsumer([([Message(0, 1), Message(0, 2)], None)])
    assert polled(tmp_path, consumer) == [(0, 1), (0, 2)]
    assert consumer.calls == [(5, 0)]  # no wait for more


def test_with_nothing_there_it_waits_for_a_first_record_then_takes_what_followed(
        tmp_path: Any) -> None:
    consumer = ScriptedConsumer([([], None), ([Message(0, 1)], None),
                                 ([Message(1, 7), Message(0, 2)], None)])
    assert polled(tmp_path, consumer) == [(0, 1), (1, 7), (0, 2)]
    assert consumer.calls == [(5, 0), (1, stream_thread.POLL_SECONDS), (4, 0)]


def test_a_read_torn_by_a_rebalance_is_put_back_from_its_first_records(tmp_path: Any) -> None:
    loop: list[RouteLoop] = []

    def revoked() -> None:  # the partitions moved between the read's two consume calls
        loop[0].on_revoke(consumer, [])

    consumer = ScriptedConsumer([([], None), ([Message(0, 11)], None),
                                 ([Message(0, 10), Message(1, 40), Message(1, 41)], revoked)])
    route = route_loop(tmp_path, batch_records=5)
    route.transition(State.STARTING)  # subscribed: rebalances may come
    loop.append(route)
    route.consumer = consumer
    assert route.poll() == []  # none of it decided now
    # Read again from the lowest offset seen of each partition (the new position, or what
    # was read before the rebalance): nothing skipped.
    assert consumer.seeks == {(TOPIC, 0): 10, (TOPIC, 1): 40}
    assert route.rebalances == 1


class FlakyTransactions:
    """A producer whose init_transactions times out `failures` times (a broker down), then
    works; or fails with `error` every time."""

    def __init__(self, failures: int, error: Any = None) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def init_transactions(self, timeout: float) -> None:
        self.calls += 1
        if self.error is not None:
            raise KafkaException(self.error)
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "retry call to resume",
                                            retriable=True))


def test_a_new_producer_waits_out_a_broker_that_is_down(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FlakyTransactions(failures=3)
    monkeypatch.setattr(kafka_clients, "route_producer",
                        lambda *args: producer)
    loop = route_loop(tmp_path)
    loop.data_dir.mkdir(parents=True)  # where the transactional id's process id is kept
    assert loop.new_producer() is producer
    assert producer.calls == 4  # three timeouts, then initialised


def test_a_new_producer_gives_up_on_a_fatal_error_or_when_stopping(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fenced = FlakyTransactions(0, KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    monkeypatch.setattr(kafka_clients, "route_producer", lambda *args: fenced)
    loop = route_loop(tmp_path)
    loop.data_dir.mkdir(parents=True)
    with pytest.raises(KafkaException, match="fenced"):
        loop.new_producer()
    assert fenced.calls == 1
    stopping = FlakyTransactions(failures=100)
    monkeypatch.setattr(kafka_clients, "route_producer", lambda *args: stopping)
    loop.request_stop()
    with pytest.raises(KafkaException, match="retry call to resume"):
        loop.new_producer()
    assert stopping.calls == 1
