"""Notifications: plain words, next step, retry advice, grouping and de-duplication."""

from __future__ import annotations

from typing import Any

from processors.core.policy.codes import RULE_CODES
from processors.tools.notify import NEXT_STEP, notifications


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
