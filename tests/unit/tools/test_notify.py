"""Notifications: plain words, next step, retry advice, grouping, de-duplication, and how one
is settled (retried, delivered, dead-lettered)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.core.policy.codes import RULE_CODES
from processors.tools.notify import (
    DEAD_LETTER,
    DELIVERED,
    NEXT_STEP,
    RETRY,
    Answer,
    RetryPolicy,
    Settlement,
    deliver,
    idempotency_key,
    notification_of,
    notifications,
    parse_retry_after,
    verdict,
)


def rejection(message_id: str, code: str, context: dict[str, Any] | None = None,
              retryable: bool = False, retry_after: str | None = None) -> dict[str, Any]:
    return {"message_id": message_id, "tenant_id": "acme", "error_code": code,
            "reason": f"reason for {code}", "retryable": retryable, "retry_after": retry_after,
            "message": {"message_id": message_id, "context": context or {}}}


def test_every_code_has_a_next_step() -> None:
    assert set(NEXT_STEP) == set(RULE_CODES)


def test_grouped_by_ticket_and_campaign_and_deduplicated() -> None:
    out = notifications([
        rejection("m1", "MARKETING_PAUSED_US", {"ticket_id": "T-1", "agent_id": "a7"}),
        rejection("m2", "MARKETING_OPTED_OUT", {"ticket_id": "T-1"}),
        rejection("m1", "MARKETING_PAUSED_US", {"ticket_id": "T-1"}),  # told twice
        rejection("m3", "USER_MARKETING_TEMPLATE_LIMIT", {"campaign_id": "spring"}, True,
                  "2026-11-27T10:00:00.000Z"),
        rejection("m4", "TEMPLATE_PAUSED", None, True),
    ])
    by_group = {tuple(sorted(k for k in n if k.endswith("_id") and k != "tenant_id")): n
                for n in out}
    ticket = by_group[("ticket_id",)]
    assert ticket["ticket_id"] == "T-1" and ticket["count"] == 2
    assert [i["message_id"] for i in ticket["items"]] == ["m1", "m2"]
    assert ticket["items"][0]["agent_id"] == "a7"
    assert ticket["items"][0]["retry"] == "Do not retry this message."
    assert "MARKETING_OPTED_OUT" in ticket["summary"]
    campaign = by_group[("campaign_id",)]
    assert campaign["items"][0]["retry"] == "You can retry after 2026-11-27T10:00:00.000Z."
    alone = by_group[("message_id",)]
    assert alone["items"][0]["retry"] == "You can retry later."
    assert alone["items"][0]["next_step"] == NEXT_STEP["TEMPLATE_PAUSED"]


# ---- settling one notification: what is retried, after how long, and what is dead-lettered --


def test_the_idempotency_key_names_the_rejection() -> None:
    first = notification_of(rejection("m1", "MARKETING_PAUSED_US", {"ticket_id": "T-1"}))
    again = notification_of(rejection("m1", "MARKETING_PAUSED_US", {"campaign_id": "c"}))
    other = notification_of(rejection("m2", "MARKETING_PAUSED_US", {"ticket_id": "T-1"}))
    assert first["idempotency_key"] == again["idempotency_key"] == idempotency_key(
        rejection("m1", "TEMPLATE_PAUSED"))
    assert other["idempotency_key"] != first["idempotency_key"]
    assert "m1" not in first["idempotency_key"]
    assert first["ticket_id"] == "T-1" and first["count"] == 1


@pytest.mark.parametrize(("answer", "expected"), [
    (Answer(200), DELIVERED), (Answer(204), DELIVERED),
    (Answer(400), DEAD_LETTER), (Answer(401), DEAD_LETTER), (Answer(404), DEAD_LETTER),
    (Answer(410), DEAD_LETTER), (Answer(302), DEAD_LETTER),
    (Answer(408), RETRY), (Answer(429), RETRY), (Answer(500), RETRY), (Answer(503), RETRY),
    (Answer(None, error="timed out"), RETRY),
])
def test_verdicts(answer: Answer, expected: str) -> None:
    assert verdict(answer) == expected


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7", 0) == 7
    assert parse_retry_after(" 1.5 ", 0) == 1.5
    assert parse_retry_after("-3", 0) == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", 1445412480.0) == 30
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_back_off_is_capped_exponential_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(first=0.5, cap=4.0, retry_after_cap=100.0)
    assert [policy.pause(n, None, lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert policy.pause(3, None, lambda: 0.25) == 1.0  # jitter scales the ceiling
    assert policy.pause(0, 9.0, lambda: 1.0) == 9.0     # Retry-After is a floor
    assert policy.pause(5, 0.1, lambda: 1.0) == 4.0     # ... not a ceiling
    assert policy.pause(0, 1e9, lambda: 0.0) == 100.0   # and is capped itself


class Receiver:
    """A scripted webhook with a fake clock: each answer, then the clock moves by its cost."""

    def __init__(self, *answers: Answer, cost: float = 0.0) -> None:
        self.answers = list(answers)
        self.now = 0.0
        self.cost = cost
        self.waits: list[float] = []

    def send(self, notification: dict[str, Any]) -> Answer:
        self.now += self.cost
        return self.answers.pop(0)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def settle(self, policy: RetryPolicy | None = None) -> Settlement:
        return deliver({"idempotency_key": "k"}, self.send, policy or RetryPolicy(),
                       self.wait, lambda: self.now, lambda: 1.0)


def test_a_4xx_is_dead_lettered_at_once() -> None:
    receiver = Receiver(Answer(400, "bad ticket id"))
    settled = receiver.settle()
    assert (settled.outcome, settled.reason, settled.attempts) == (DEAD_LETTER, "refused", 1)
    assert settled.last.body == "bad ticket id" and receiver.waits == []


def test_5xx_timeouts_408_and_429_are_retried_until_delivered() -> None:
    receiver = Receiver(Answer(500), Answer(None, error="timeout"), Answer(408),
                        Answer(429, retry_after=7.0), Answer(200))
    settled = receiver.settle(RetryPolicy(first=0.5, cap=60))
    assert (settled.outcome, settled.attempts) == (DELIVERED, 5)
    assert receiver.waits == [0.5, 1.0, 2.0, 7.0]


def test_a_notification_retried_too_long_is_dead_lettered_not_stuck() -> None:
    receiver = Receiver(*[Answer(503)] * 100, cost=10.0)
    settled = receiver.settle(RetryPolicy(first=1, cap=8, give_up_after=60))
    assert (settled.outcome, settled.reason) == (DEAD_LETTER, "gave_up")
    assert receiver.now <= 60 + 10  # the last attempt's own time, no wait past the limit
    assert settled.last.status == 503


def test_the_settled_topic_read_in_order_is_the_de_duplication() -> None:
    from processors.tools.notifier import settled_keys

    assert settled_keys([
        (b"a", b'{"outcome": "delivered"}'), (b"b", b'{"outcome": "dead_letter"}'),
        (b"c", b'{"outcome": "delivered"}'), (b"c", None),  # a tombstone forgets it
        (None, b'{"outcome": "delivered"}'), (b"d", b"not json"),
    ]) == {"a": "delivered", "b": "dead_letter"}
