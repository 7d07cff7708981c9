"""processors.runtime.engine.stream_thread: how the loop reads a batch (and puts back a read
torn by a rebalance), and the stream thread's real-time priority, taken only when asked for,
and its guard. The Kafka loop itself is covered end to end (tests/e2e) and by make chaos."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from processors.runtime import cpu_slice
from processors.runtime.engine import stream_thread
from processors.runtime.engine.stream_thread import RouteLoop
from processors.runtime.metrics import GateMetrics
from processors.settings import Settings

TOPIC = "outbound"


def route_loop(tmp_path: Any, **settings: Any) -> RouteLoop:
    router: Any = SimpleNamespace(released=lambda partitions: None)  # all on_revoke asks
    return RouteLoop(Settings(data_dir=str(tmp_path), app_id="unit", **settings), router,
                     GateMetrics(CollectorRegistry(), 10), lambda: True)


def gauge(loop: RouteLoop) -> float | None:
    metrics = loop.metrics
    assert isinstance(metrics, GateMetrics)
    return metrics.registry.get_sample_value("outbound_gate_stream_realtime")


def on_a_thread(action: Any) -> Any:
    """action() on a thread of its own (a real-time policy stays with that thread)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(action()))
    thread.start()
    thread.join()
    return out[0]


def test_not_asked_for_it_is_not_taken(tmp_path: Any) -> None:
    loop = route_loop(tmp_path, stream_rt_priority=0)

    def take() -> bool:
        loop.take_realtime()
        return cpu_slice.is_realtime()

    held = on_a_thread(take)
    assert held is False
    assert loop.realtime_guard is None
    assert gauge(loop) == 0.0


def test_asked_for_it_is_taken_where_the_process_may(tmp_path: Any) -> None:
    allowed = on_a_thread(lambda: cpu_slice.request_realtime(1) is None)
    loop = route_loop(tmp_path, stream_rt_priority=1, stream_rt_max_percent=70)

    def take() -> bool:
        loop.take_realtime()
        held = cpu_slice.is_realtime()
        cpu_slice.release_realtime(0)
        return held

    assert on_a_thread(take) is allowed
    assert gauge(loop) == float(allowed)
    if allowed:
        assert loop.realtime_guard is not None
        assert loop.realtime_guard.max_share == pytest.approx(0.70)
    else:  # refused: nothing to guard
        assert loop.realtime_guard is None


def test_the_guard_looks_once_a_period_and_the_gauge_follows_it(tmp_path: Any) -> None:
    loop = route_loop(tmp_path, stream_rt_priority=1)
    cpu, wall = [0.0], [0.0]
    calls: list[str] = []

    def call(name: str) -> str | None:
        calls.append(name)
        return None

    loop.realtime_guard = cpu_slice.RealtimeGuard(
        0.8, take=lambda: call("take"), release=lambda: call("release"),
        cpu_clock=lambda: cpu[0], wall_clock=lambda: wall[0])
    loop.metrics.stream_realtime.set(1)

    def spend(cpu_used: float, seconds: float) -> None:
        cpu[0] += cpu_used
        wall[0] += seconds
        # The loop looks when a period has passed since its last look.
        period_passed = seconds >= stream_thread.REALTIME_GUARD_SECONDS
        loop.last_guard = time.monotonic() - (2 * stream_thread.REALTIME_GUARD_SECONDS
                                              if period_passed else 0.0)
        loop.maybe_guard_realtime()

    spend(0.95, 1.0)  # draining a backlog: above 80% of a core
    assert (calls, gauge(loop)) == (["release"], 0.0)
    spend(0.3, 0.5)  # within the period: not looked at
    assert calls == ["release"]
    spend(0.2, 1.0)  # 0.5 s of CPU over the 1.5 s since the last look
    assert (calls, gauge(loop)) == (["release", "take"], 1.0)
    spend(0.5, 1.0)  # paced: it keeps the priority, nothing changes
    assert (calls, gauge(loop)) == (["release", "take"], 1.0)


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
    loop.append(route)
    route.consumer = consumer
    assert route.poll() == []  # none of it decided now
    # Read again from the lowest offset seen of each partition (the new position, or what
    # was read before the rebalance): nothing skipped.
    assert consumer.seeks == {(TOPIC, 0): 10, (TOPIC, 1): 40}
    assert route.rebalances == 1
