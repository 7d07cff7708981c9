"""Messaging limits in the offline check (issue 16): limits learned from Meta's webhooks, the
tenant's slots, rule MESSAGING_LIMIT_REACHED after judge, and the report. No broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.cli.main import main
from processors.core.policy import PolicySet, load_policy
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.settings import Topics
from processors.tools.offline import OfflineCheck, TenantLimit
from processors.tools.report import render
from tests.factories import inbound, message, meta_body, policy_with, status, template_entry

POLICY = load_policy()
TOPICS = Topics()
T0 = parse_rfc3339("2026-11-26T12:00:00Z")  # the Meta fixtures' entry time (1795694400)
DAY = 86400
CODE = "MESSAGING_LIMIT_REACHED"
CA_BSUID = "CA.13491208655302741918"


def at(seconds: float) -> str:
    return format_rfc3339(T0 + seconds)


def number(n: int) -> str:
    return f"+1416555{n:04d}"  # Toronto numbers, one per user


def send(message_id: str, recipient: str, seconds: float, tenant: str = "acme",
         **fields: Any) -> dict[str, Any]:
    return message(**{"message_id": message_id, "recipient": recipient,
                      "created_at": at(seconds), "tenant_id": tenant,
                      "template": {"name": "notice", "language": "en_US"}, **fields})


def webhook(field: str, value: dict[str, Any], seconds: float = 0,
            tenant: str = "acme") -> dict[str, Any]:
    """Meta's body on the webhooks topic, its tenant in the record header, as live."""
    body = meta_body("business_capability_update" if field == "business_capability_update"
                     else "phone_number_quality_update")
    body["entry"][0]["time"] += int(seconds)
    body["entry"][0]["changes"][0]["value"] = value
    return {"topic": TOPICS.webhooks, "value": body, "headers": {"tenant_id": tenant}}


def tier(value: str, seconds: float = 0, tenant: str = "acme") -> dict[str, Any]:
    return webhook("phone_number_quality_update",
                   {"event": "UPGRADE", "max_daily_conversations_per_business": value},
                   seconds, tenant)



class Run:
    """The offline check over envelopes and messages, the tenants' catalogs first."""

    def __init__(self, lines: list[dict[str, Any]], policies: PolicySet = POLICY) -> None:
        self.check = OfflineCheck(policies)
        catalog = [{"topic": TOPICS.templates, "value": template_entry("notice", "UTILITY",
                                                                       tenant_id=tenant)}
                   for tenant in ("acme", "globex")]
        self.results = list(self.check.run(orjson.dumps(line) for line in [*catalog, *lines]))
        self.by_id = {r["message_id"]: r for r in self.results if "message_id" in r}

    def code(self, message_id: str) -> str | None:
        code: str | None = self.by_id[message_id]["error_code"]
        return code

    def refused(self) -> list[str]:
        return [key for key, r in self.by_id.items() if r["error_code"] == CODE]


# --- the acceptance ------------------------------------------------------------------


def test_tier_250_acceptance() -> None:
    lines: list[dict[str, Any]] = [tier("TIER_250")]
    lines += [send(f"new-{n}", number(n), n) for n in range(1, 252)]  # 251 new users
    lines.append(send("again-1", number(1), 300))  # the 252nd send: to user 1
    lines.append({"topic": TOPICS.inbound, "value": inbound(number(500), at(310))})
    lines.append(send("window", number(500), 320))  # a user who just wrote
    lines.append(send("next-day", number(600), DAY + 1))  # user 1's slot has closed
    lines.append(send("next-day-full", number(601), DAY + 1.5))
    run = Run(lines)
    assert all(run.code(f"new-{n}") is None for n in range(1, 251))
    over = run.by_id["new-251"]
    assert (over["decision"], over["error_code"], over["meta_error_code"], over["retryable"],
            over["violations"]) == ("rejected", CODE, None, True, [CODE])
    assert over["retry_after"] == at(1 + DAY)  # when the first slot (user 1's) closes
    assert run.code("again-1") is None  # user 1 holds a slot: no new one
    assert run.code("window") is None  # an open service window counts no slot
    assert run.code("next-day") is None  # 24 hours later new users fit again
    # ... as many as slots have closed: the second slot closes at 2 + 24 h.
    assert run.by_id["next-day-full"]["retry_after"] == at(2 + DAY)
    assert run.refused() == ["new-251", "next-day-full"]
    use = run.check.summary.messaging_limits["acme"]
    assert (use.limit, use.used, use.peak, use.refused) == (250, 250, 250, 2)


def test_refused_sends_use_no_pair_budget_and_no_slot() -> None:
    lines: list[dict[str, Any]] = [tier("TIER_50")]
    lines += [send(f"new-{n}", number(n), n) for n in range(50)]
    lines += [send(f"late-{k}", number(99), 60 + k) for k in range(46)]
    run = Run(lines)
    # 46 refusals, none of them spent user 99's pair budget (45) nor opened a slot.
    assert run.refused() == [f"late-{k}" for k in range(46)]
    assert run.check.summary.messaging_limits["acme"].used == 50


# --- the limit: webhooks, the policy's pin, unknown and unlimited ----------------------------


def test_unknown_limit_switches_the_rule_off() -> None:
    run = Run([send(f"n-{n}", number(n), n) for n in range(300)])
    assert run.refused() == [] and run.check.summary.messaging_limits == {}


@pytest.mark.parametrize("line", [
    tier("TIER_UNLIMITED"),
    webhook("business_capability_update", {"max_daily_conversations_per_business": -1}),
])
def test_unlimited_switches_the_rule_off(line: dict[str, Any]) -> None:
    run = Run([tier("TIER_50", -60), line, *(send(f"n-{n}", number(n), n) for n in range(60))])
    assert run.refused() == []


def test_business_capability_integer_limit() -> None:
    run = Run([webhook("business_capability_update", {"max_daily_conversations_per_business": 2,
                                                      "max_phone_numbers_per_waba": 25}),
               *(send(f"n-{n}", number(n), n) for n in range(3))])
    assert run.refused() == ["n-2"]


def test_newest_webhook_wins_whatever_the_order() -> None:
    run = Run([tier("TIER_50", 60), tier("TIER_UNLIMITED", 0),  # older, arriving later
               *(send(f"n-{n}", number(n), 100 + n) for n in range(51))])
    assert run.refused() == ["n-50"]
    run = Run([tier("TIER_UNLIMITED", 0), tier("TIER_50", 60),
               *(send(f"n-{n}", number(n), 100 + n) for n in range(51))])
    assert run.refused() == ["n-50"]


def test_unknown_tier_value_changes_nothing() -> None:
    run = Run([tier("TIER_50"), tier("TIER_NOT_SET", 60), tier("TIER_5K", 70),
               *(send(f"n-{n}", number(n), 100 + n) for n in range(51))])
    assert run.refused() == ["n-50"]
    assert run.check.summary.state_events == 3  # the catalog's two and one limit


def test_policy_pin_wins_over_the_webhook() -> None:
    pinned = policy_with(tenants={"acme": {"parameters": {"messaging_limit": 2}}})
    run = Run([tier("TIER_250"), *(send(f"n-{n}", number(n), n) for n in range(3))], pinned)
    assert run.refused() == ["n-2"]
    assert run.check.summary.messaging_limits["acme"].limit == 2
    unlimited = policy_with(parameters__messaging_limit="unlimited")
    run = Run([tier("TIER_50"), *(send(f"n-{n}", number(n), n) for n in range(60))], unlimited)
    assert run.refused() == []
    # pinned, with no webhook at all
    run = Run([send(f"n-{n}", number(n), n) for n in range(3)],
              policy_with(parameters__messaging_limit=1))
    assert run.refused() == ["n-1", "n-2"]


def test_limits_are_per_tenant() -> None:
    run = Run([tier("TIER_50", tenant="acme"), tier("TIER_250", tenant="globex"),
               *(send(f"acme-{n}", number(n), n) for n in range(51)),
               *(send(f"globex-{n}", number(n), n, tenant="globex") for n in range(51))])
    assert run.refused() == ["acme-50"]
    assert {tenant: use.limit for tenant, use in run.check.summary.messaging_limits.items()} \
        == {"acme": 50, "globex": 250}


# --- modes -----------------------------------------------------------------------------------


def test_monitor_mode_accepts_and_counts() -> None:
    monitor = policy_with(rules__MESSAGING_LIMIT_REACHED__mode="monitor")
    run = Run([tier("TIER_50"), *(send(f"n-{n}", number(n), n) for n in range(52))], monitor)
    assert run.refused() == []
    assert [key for key, r in run.by_id.items() if r["monitored"] == [CODE]] == ["n-50", "n-51"]
    assert run.by_id["n-50"]["decision"] == "accepted"
    assert run.check.summary.monitored[CODE] == 2
    assert run.check.summary.messaging_limits["acme"].refused == 2


def test_off_mode_and_before_2025_10_07() -> None:
    off = policy_with(tenants={"acme": {"rules": {CODE: {"mode": "off"}}}})
    assert Run([tier("TIER_50"), *(send(f"n-{n}", number(n), n) for n in range(60))],
               off).refused() == []
    early = [send(f"n-{n}", number(n), 0, created_at=f"2025-10-06T12:00:{n:02d}Z")
             for n in range(52)]
    assert Run([tier("TIER_50"), *early]).refused() == []


# --- what counts -----------------------------------------------------------------------------


def test_linked_number_and_bsuid_are_one_user() -> None:
    linking = {"topic": TOPICS.statuses, "value": {
        **status(number(1)[1:], None, at(-60), state="delivered"), "user_id": CA_BSUID}}
    run = Run([tier("TIER_50"), linking,
               *(send(f"n-{n}", number(n), n) for n in range(1, 50)),  # 49 users
               send("bsuid", CA_BSUID, 100),  # user 1 again, by BSUID: no new slot
               send("new", number(60), 110),  # the 50th user
               send("over", number(61), 120)])
    assert run.code("bsuid") is None and run.code("new") is None
    assert run.refused() == ["over"]
    assert run.by_id["bsuid"]["enrichment"]["recipient_e164"] == number(1)


def test_a_window_opened_by_the_linked_bsuid_counts_for_the_number() -> None:
    linking = {"topic": TOPICS.inbound, "value": {
        **inbound(number(1)[1:], at(-120)), "user_id": CA_BSUID}}
    wrote = {"topic": TOPICS.inbound, "value": inbound(CA_BSUID, at(-60))}
    run = Run([tier("TIER_50"), linking, wrote,
               *(send(f"n-{n}", number(n), n) for n in range(2, 52)),  # 50 users
               send("number", number(1), 100)])  # wrote by BSUID a minute ago
    assert run.code("number") is None and run.refused() == []


def test_free_form_and_rejected_sends_open_no_slot() -> None:
    run = Run([tier("TIER_50"),
               {"topic": TOPICS.inbound, "value": inbound(number(0)[1:], at(-60))},
               send("free", number(0), 1, kind="free_form", template=None),
               send("bulk-marketing", number(1), 2, template={"name": "missing",
                                                          "language": "en_US"},
                    origin="bulk"),  # an unknown template: MARKETING, refused in bulk
               *(send(f"n-{n}", number(n), 10 + n) for n in range(2, 52))])
    assert run.code("bulk-marketing") == "BULK_MARKETING_NOT_ALLOWED"
    assert run.refused() == []


# --- the report ------------------------------------------------------------------------------


def test_summary_and_html_report_show_slots_per_tenant() -> None:
    run = Run([tier("TIER_50"), *(send(f"n-{n}", number(n), n) for n in range(51))])
    summary = run.check.summary
    assert summary.messaging_limits == {"acme": TenantLimit(50, 50, 50, 1)}
    text = summary.render()
    assert "messaging limits (24 h)" in text
    assert any(line.split() == ["acme", "50", "50", "50", "1"] for line in text.splitlines())
    page = render(summary, [r for r in run.results if r.get("decision") == "rejected"],
                  "campaign.jsonl")
    assert "Messaging limits" in page and "<td>acme</td><td>50</td><td>50</td>" in page
    assert "Messaging limits" not in render(Run([]).check.summary, [], "x.jsonl")


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"topic": TOPICS.templates, "value": template_entry("notice", "UTILITY")},
             tier("TIER_50"), *(send(f"n-{n}", number(n), n) for n in range(51))]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out, report = tmp_path / "out.jsonl", tmp_path / "report.html"
    assert main(["check", str(source), "--output", str(out), "--report", str(report)]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["message_id"] for r in results if r["error_code"] == CODE] == ["n-50"]
    assert "messaging limits (24 h)" in capsys.readouterr().err
    assert "Messaging limits" in report.read_text()

