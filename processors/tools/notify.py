"""What the notifier tells agents and campaign owners about a rejection. Pure.

One plain sentence (the rejection's reason), what to do next, and when a retry makes sense;
notifications are grouped by the ticket or campaign in the message's context.
"""

from __future__ import annotations

from collections.abc import Iterable
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
