"""What the notifier tells agents and campaign owners about a rejection, and how a delivery
is settled. Pure.

One plain sentence (the rejection's reason), what to do next, and when a retry makes sense,
with the ticket or campaign of the message's context; an idempotency key per rejection; which
answers of the receiver are retried (and after how long) and which are dead-lettered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

NEXT_STEP = {
    "INVALID_RECIPIENT": "Check the customer's phone number and send again.",
    "RECIPIENT_REGION_UNSUPPORTED": "Reach this customer on another channel.",
    "BSUID_RECIPIENT_UNSUPPORTED": "Send the authentication template to the customer's phone "
                                   "number.",
    "TEMPLATE_DISABLED": "Choose another approved template.",
    "TEMPLATE_PAUSED": "Wait until Meta unpauses the template, or choose another one.",
    "TEMPLATE_NOT_APPROVED": "Wait for Meta to approve the template, or choose an approved one.",
    "TEMPLATE_ARCHIVED": "Unarchive the template in WhatsApp Manager, or choose another one.",
    "OUTSIDE_SERVICE_WINDOW": "Send an approved template instead of a free-form message.",
    "BULK_MARKETING_NOT_ALLOWED": "Send marketing through a campaign, not a bulk action.",
    "MARKETING_OPTED_OUT": "Do not send marketing to this customer; service messages still work.",
    "MARKETING_PAUSED_US": "Use a utility or authentication template, or another channel.",
    "USER_IN_MARKETING_EXPERIMENT": "Do not resend this marketing; reach the customer with a "
                                    "utility message or on another channel.",
    "USER_MARKETING_TEMPLATE_LIMIT": "Wait before sending this customer more marketing.",
    "PAIR_RATE_LIMITED": "Slow down: wait until the retry time before messaging this customer "
                         "again from this number.",
    "MESSAGING_LIMIT_REACHED": "Wait until the retry time; customers who wrote in the last 24 "
                               "hours, or were messaged then, can still be reached now.",
}


def retry_advice(rejection: dict[str, Any]) -> str:
    if not rejection.get("retryable"):
        return "Do not retry this message."
    if rejection.get("retry_after"):
        return f"You can retry after {rejection['retry_after']}."
    return "You can retry later."


def group_of(rejection: dict[str, Any]) -> dict[str, str]:
    """The ticket or campaign a rejection belongs to, else the message itself."""
    context = (rejection.get("message") or {}).get("context") or {}
    for field in ("ticket_id", "campaign_id"):
        if isinstance(context.get(field), str | int):
            return {field: str(context[field])}
    return {"message_id": str(rejection.get("message_id"))}


def item(rejection: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": rejection.get("message_id"),
        "error_code": rejection.get("error_code"),
        "reason": rejection.get("reason"),
        "next_step": NEXT_STEP.get(str(rejection.get("error_code")), "Contact support."),
        "retry": retry_advice(rejection),
        "retry_after": rejection.get("retry_after"),
        "agent_id": ((rejection.get("message") or {}).get("context") or {}).get("agent_id"),
    }


def notifications(rejections: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group rejections by (tenant, ticket or campaign), one item per message_id."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for rejection in rejections:
        group = group_of(rejection)
        key = (str(rejection.get("tenant_id")), tuple(sorted(group.items())))
        entry = groups.setdefault(key, {"tenant_id": rejection.get("tenant_id"), **group,
                                        "items": []})
        if all(i["message_id"] != rejection.get("message_id") for i in entry["items"]):
            entry["items"].append(item(rejection))
    for entry in groups.values():
        entry["count"] = len(entry["items"])
        codes = sorted({i["error_code"] for i in entry["items"]})
        entry["summary"] = (f"{entry['count']} message(s) not sent: {', '.join(codes)}")
    return list(groups.values())


# ---- one notification per rejection, and what its delivery came to ------------------------------

# The receiver's answer is kept in the dead letter up to this much: enough to say why.
ANSWER_MAX_CHARS = 2000


def idempotency_key(rejection: dict[str, Any]) -> str:
    """The same for every notification of one rejection, across retries and restarts: the gate
    decides a (tenant, message_id) once, so that pair names the rejection. Hashed, so that a
    receiver's logs of the header hold no message ids."""
    import hashlib

    named = f"{rejection.get('tenant_id')}\n{rejection.get('message_id')}".encode()
    return "og-" + hashlib.sha256(named).hexdigest()[:40]


def notification_of(rejection: dict[str, Any]) -> dict[str, Any]:
    """The notification of one rejection: its group (ticket, campaign or message), one item and
    the idempotency key the receiver can de-duplicate on (also sent as Idempotency-Key)."""
    [notification] = notifications([rejection])
    return {**notification, "idempotency_key": idempotency_key(rejection)}


@dataclass(frozen=True)
class Answer:
    """What one POST came to: an HTTP status, or no status and the error (timeout, refused)."""

    status: int | None
    body: str = ""
    retry_after: float | None = None  # seconds, from the Retry-After header
    error: str | None = None


DELIVERED, DEAD_LETTER, RETRY = "delivered", "dead_letter", "retry"


def verdict(answer: Answer) -> str:
    """2xx delivered; 408, 429, 5xx and no answer at all retried; any other status (a 4xx, a
    redirect the notifier does not follow) will not change by asking again: dead letter."""
    if answer.status is None:
        return RETRY
    if 200 <= answer.status < 300:
        return DELIVERED
    if answer.status in (408, 429) or answer.status >= 500:
        return RETRY
    return DEAD_LETTER


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when
    absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential back-off with full jitter; the receiver's Retry-After is a floor
    (capped too, so that one answer cannot park the notifier for days)."""

    first: float = 0.5         # the first back-off's ceiling, seconds
    cap: float = 60.0          # no back-off ceiling above this
    retry_after_cap: float = 3600.0
    give_up_after: float = 3600.0  # then the notification is dead-lettered: nothing is stuck

    def pause(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 for the first)."""
        ceiling = min(self.cap, self.first * 2.0 ** min(attempt, 62))
        jittered = ceiling * rand()  # full jitter: many notifiers do not retry in step
        if retry_after is not None:
            return max(min(retry_after, self.retry_after_cap), jittered)
        return jittered


@dataclass(frozen=True)
class Settlement:
    """How a notification was settled: delivered, or dead-lettered (refused or given up)."""

    outcome: str               # DELIVERED or DEAD_LETTER
    attempts: int
    last: Answer
    reason: str | None = None  # for a dead letter: "refused" or "gave_up"


def deliver(notification: dict[str, Any], send: Callable[[dict[str, Any]], Answer],
            policy: RetryPolicy, wait: Callable[[float], None], clock: Callable[[], float],
            rand: Callable[[], float]) -> Settlement:
    """POST one notification until it is delivered, refused, or retried for too long."""
    started = clock()
    for attempt in itertools.count():
        answer = send(notification)
        outcome = verdict(answer)
        if outcome == DELIVERED:
            return Settlement(DELIVERED, attempt + 1, answer)
        if outcome == DEAD_LETTER:
            return Settlement(DEAD_LETTER, attempt + 1, answer, "refused")
        pause = policy.pause(attempt, answer.retry_after, rand)
        if clock() + pause - started > policy.give_up_after:
            return Settlement(DEAD_LETTER, attempt + 1, answer, "gave_up")
        wait(pause)
    raise AssertionError("unreachable")


def described(answer: Answer) -> str:
    """One line for the log and the dead letter's error: the status or the error, never the
    body (a receiver may echo what it was sent)."""
    return f"HTTP {answer.status}" if answer.status is not None else str(answer.error)
