"""Meta's business-scoped user IDs (BSUIDs), linked identities, archived templates and the pair
rate limit (issue 12), through the pure core and the offline check: no broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.cli.main import main
from processors.core import contracts, outputs
from processors.core.enrich import BSUID, PARENT_BSUID, PHONE, parse_recipient
from processors.core.judge import judge
from processors.core.policy import EMPTY, PolicySet, decide, enrich, load_policy
from processors.core.policy import identity as ids
from processors.core.policy import state as st
from processors.core.timeutil import format_rfc3339, parse_rfc3339
from processors.settings import Topics
from processors.tools.client import send_path
from processors.tools.offline import OfflineCheck
from tests.factories import (
    FIXTURES,
    inbound,
    message,
    meta_body,
    policy_with,
    preference,
    status,
    template_entry,
)

POLICY = load_policy()
TOPICS = Topics()
NOON = parse_rfc3339("2026-11-26T12:00:00Z")  # the Meta fixtures' timestamp (1795694400)
CA = "+14165550123"
CA_WA = CA[1:]  # the same number as Meta's wa_id
CA_BSUID = "CA.13491208655302741918"  # the fixtures' BSUID of CA
CA_PARENT = "CA.ENT.11815799212886844830"
BR = "+5511912345678"
BR_WA = BR[1:]
BR_BSUID = "BR.1502576394655843"
UTILITY = {"name": "notice", "language": "en_US"}
OTP = {"name": "otp", "language": "en_US"}
CATALOG = [template_entry("promo", "MARKETING"), template_entry("notice", "UTILITY"),
           template_entry("otp", "AUTHENTICATION")]


def hhmmss(seconds_after_noon: float) -> str:
    return format_rfc3339(NOON + seconds_after_noon).replace(".000Z", "Z")


def event(topic: str, value: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    """An envelope of a state topic; a Meta body's tenant is the record header, as live."""
    return {"topic": topic, "key": None, "value": value, "headers": {"tenant_id": tenant}}


def later(body: dict[str, Any], seconds: int) -> dict[str, Any]:
    """A Meta fixture with every timestamp `seconds` after the fixture's noon."""
    text = json.dumps(body).replace("1795694400", str(1795694400 + seconds))
    moved: dict[str, Any] = json.loads(text)
    return moved


def send(message_id: str, recipient: str, at: str, **fields: Any) -> dict[str, Any]:
    return message(message_id=message_id, recipient=recipient, created_at=at, **fields)


def free_form(message_id: str, recipient: str, at: str) -> dict[str, Any]:
    return send(message_id, recipient, at, kind="free_form", template=None)


def linking_status(number: str, user_id: str, at: str, **more: Any) -> dict[str, Any]:
    """A delivered status naming a number and its BSUID (links them, changes nothing else)."""
    return event(TOPICS.statuses, {**status(number, None, at, state="delivered"),
                                   "user_id": user_id, **more})


class Run:
    """The offline check over a list of lines (outbound messages and envelopes), catalog first."""

    def __init__(self, lines: list[dict[str, Any]], policies: PolicySet = POLICY) -> None:
        self.check = OfflineCheck(policies)
        catalog = [event(TOPICS.templates, entry) for entry in CATALOG]
        self.results = list(self.check.run(orjson.dumps(line) for line in [*catalog, *lines]))
        self.by_id = {r["message_id"]: r for r in self.results if "message_id" in r}

    def code(self, message_id: str) -> str | None:
        code: str | None = self.by_id[message_id]["error_code"]
        return code

    def codes(self) -> dict[str, str | None]:
        return {key: result["error_code"] for key, result in self.by_id.items()}

    def enrichment(self, message_id: str) -> dict[str, Any]:
        enrichment: dict[str, Any] = self.by_id[message_id]["enrichment"]
        return enrichment

    def dead(self) -> list[str]:
        return [r["reason"] for r in self.results if r["decision"] == "dead_letter"]



# --- parsing a BSUID -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "region", "calling_code"), [
    ("US.13491208655302741918", BSUID, "US", 1),
    ("US.ENT.11815799212886844830", PARENT_BSUID, "US", 1),
    ("BR.1502576394655843", BSUID, "BR", 55),
    (CA_BSUID, BSUID, "CA", 1),
    (CA_PARENT, PARENT_BSUID, "CA", 1),
])
def test_a_valid_bsuid(text: str, kind: str, region: str, calling_code: int) -> None:
    parsed = parse_recipient(text)
    assert parsed.valid and parsed.problem is None
    assert (parsed.kind, parsed.identity, parsed.region, parsed.calling_code) == \
        (kind, text, region, calling_code)
    assert parsed.e164 is None and parsed.number_type is None  # no number known


def test_a_phone_number_is_still_a_phone_number() -> None:
    parsed = parse_recipient(CA_WA)
    assert (parsed.kind, parsed.identity, parsed.e164, parsed.region) == (PHONE, CA, CA, "CA")


@pytest.mark.parametrize(("text", "kind"), [
    ("ZZ.1", BSUID),  # no such region
    ("UK.1", BSUID),  # the ISO code is GB
    ("US.", BSUID),  # nothing after the dot
    ("US.ENT.", PARENT_BSUID),
    ("US.1349-1208", BSUID),  # not alphanumeric
])
def test_an_invalid_bsuid_is_an_invalid_recipient(text: str, kind: str) -> None:
    parsed = parse_recipient(text)
    assert not parsed.valid and parsed.identity is None and parsed.region is None
    assert parsed.kind == kind and parsed.problem
    doc = message(recipient=text)
    decision = decide(doc, enrich(doc, None), EMPTY, None, POLICY.base, NOON)
    assert (decision.error_code, decision.meta_error_code, decision.retryable) == \
        ("INVALID_RECIPIENT", None, False)


def test_the_region_of_a_bsuid_is_its_prefix() -> None:
    marketing = message(recipient="US.123")
    decision = decide(marketing, enrich(marketing, None), EMPTY, None, POLICY.base, NOON)
    assert (decision.error_code, decision.meta_error_code) == ("MARKETING_PAUSED_US", 131049)
    utility = message(recipient="US.123", template={**UTILITY, "category": "UTILITY"})
    assert decide(utility, enrich(utility, None), EMPTY, None, POLICY.base, NOON).accepted
    cuba = message(recipient="CU.1", template={**UTILITY, "category": "UTILITY"})
    decision = decide(cuba, enrich(cuba, None), EMPTY, None, POLICY.base, NOON)
    assert decision.error_code == "RECIPIENT_REGION_UNSUPPORTED"


@pytest.mark.parametrize(("entry", "kind", "endpoint"), [
    (template_entry("promo", "MARKETING"), "template", "marketing_messages"),
    (template_entry("promo", "UTILITY"), "template", "messages"),
    (template_entry("promo", "AUTHENTICATION"), "template", "messages"),
    (None, "free_form", "messages"),
])
def test_send_endpoint_follows_the_decided_category(entry: dict[str, Any] | None, kind: str,
                                                    endpoint: str) -> None:
    # Meta, "Route template messages by category": MARKETING to /marketing_messages, every
    # other message to /messages; the catalog's category wins over the declared one.
    doc = message(recipient="+14165550123", kind=kind,
                  template=None if kind == "free_form" else
                  {"name": "promo", "language": "en_US", "category": "MARKETING"})
    record = judge(doc, EMPTY if kind == "template" else
                   st.with_inbound(EMPTY, NOON - 60), entry, POLICY.base, NOON).record
    assert record["enrichment"]["send_endpoint"] == endpoint
    assert contracts.first_error("accepted_message", record) is None
    assert send_path(record, "106540352242922") == f"/106540352242922/{endpoint}"


def test_enrichment_of_an_unlinked_bsuid_has_no_number() -> None:
    doc = message(recipient="US.13491208655302741918")
    enrichment = enrich(doc, None)
    assert enrichment.as_dict() == {
        "recipient_e164": None, "recipient_kind": "bsuid", "recipient_region": "US",
        "calling_code": 1, "number_type": None, "template_category": "MARKETING",
        "category_source": "default", "send_endpoint": "marketing_messages"}
    decision = decide(doc, enrichment, EMPTY, None, POLICY.base, NOON)
    record = outputs.rejection(doc, enrichment, decision, NOON)
    assert contracts.first_error("rejection", record) is None
    assert outputs.output_key(doc, enrichment) == "acme:US.13491208655302741918"


def test_the_issues_utility_message_to_a_bsuid_is_accepted() -> None:
    run = Run([send("br", "BR.888123", hhmmss(0), template=UTILITY)])
    assert run.code("br") is None
    assert run.enrichment("br")["recipient_kind"] == "bsuid"
    assert run.enrichment("br")["recipient_region"] == "BR"
    assert run.check.summary.countries["BR"] == 1  # per-country figures count BSUIDs too


# --- BSUID_RECIPIENT_UNSUPPORTED (131062) -----------------------------------------------------


def test_authentication_templates_need_a_phone_number() -> None:
    run = Run([
        linking_status(CA_WA, CA_BSUID, hhmmss(-60)),
        send("otp-bsuid", CA_BSUID, hhmmss(0), template=OTP),
        send("otp-parent", CA_PARENT, hhmmss(0), template=OTP),
        send("otp-number", CA, hhmmss(0), template=OTP),
        send("utility-bsuid", CA_BSUID, hhmmss(0), template=UTILITY),
    ])
    assert run.codes() == {"otp-bsuid": "BSUID_RECIPIENT_UNSUPPORTED",
                           "otp-parent": "BSUID_RECIPIENT_UNSUPPORTED",
                           "otp-number": None, "utility-bsuid": None}
    refused = run.by_id["otp-bsuid"]
    assert (refused["meta_error_code"], refused["retryable"]) == (131062, False)
    # The gate knows the number behind the BSUID, but Meta refuses the BSUID recipient anyway.
    assert refused["enrichment"]["recipient_e164"] == CA


# --- TEMPLATE_ARCHIVED ---------------------------------------------------------------------


def test_archived_and_unarchived_template_webhooks() -> None:
    run = Run([
        event(TOPICS.templates, meta_body("template_status_archived")),  # promo, at noon
        send("before", CA, hhmmss(-3600)),
        send("archived", CA, hhmmss(3600)),
        event(TOPICS.templates, later(meta_body("template_status_unarchived"), 7200)),
        send("unarchived", CA, hhmmss(3 * 3600)),
        event(TOPICS.templates, later(meta_body("template_status_archived"), 4 * 3600)),
        send("archived-again", CA, hhmmss(5 * 3600)),
    ])
    assert run.codes() == {"before": None, "archived": "TEMPLATE_ARCHIVED", "unarchived": None,
                           "archived-again": "TEMPLATE_ARCHIVED"}
    archived = run.by_id["archived"]
    assert (archived["meta_error_code"], archived["retryable"]) == (None, False)
    # The status update carries no category: the catalog kept the one it knew.
    assert archived["enrichment"]["category_source"] == "catalog"


def test_catalog_import_keeps_archived_templates(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "import", str(FIXTURES / "template_list_archived.json"),
                 "--tenant", "acme", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    envelopes = [json.loads(line) for line in out.splitlines()]
    assert [(e["key"], e["value"]["status"]) for e in envelopes] == [
        ("acme:winter_sale:en_US", "ARCHIVED"), ("acme:shipping_update:en_US", "APPROVED")]
    assert "2 entries for tenant acme (dry run), 0 skipped" in err
    state = tmp_path / "catalog.jsonl"
    state.write_text(out)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in [
        send("sale", CA, "2099-01-01T00:00:00Z", template={"name": "winter_sale",
                                                             "language": "en_US"}),
        send("shipped", CA, "2099-01-01T00:00:00Z", template={"name": "shipping_update",
                                                                "language": "en_US"})]))
    result = tmp_path / "out.jsonl"
    assert main(["check", str(source), "--state", str(state), "--output", str(result)]) == 0
    decided = {r["message_id"]: r["error_code"]
               for r in map(json.loads, result.read_text().splitlines())}
    assert decided == {"sale": "TEMPLATE_ARCHIVED", "shipped": None}


# --- PAIR_RATE_LIMITED (131056) --------------------------------------------------------------


def test_the_issues_pair_rate_example() -> None:
    lines = [send(f"burst-{n}", CA, hhmmss(0), template=UTILITY) for n in range(45)]
    lines += [send("at-01", CA, hhmmss(1), template=UTILITY),
              send("at-07", CA, hhmmss(7), template=UTILITY),
              send("at-08", CA, hhmmss(8), template=UTILITY),
              send("at-08-other-number", CA, hhmmss(8), template=UTILITY,
                   business_number="+15550783882")]
    run = Run(lines)
    assert all(run.code(f"burst-{n}") is None for n in range(45))
    assert {key: run.code(key) for key in ("at-01", "at-07", "at-08", "at-08-other-number")} \
        == {"at-01": "PAIR_RATE_LIMITED", "at-07": None, "at-08": "PAIR_RATE_LIMITED",
            "at-08-other-number": None}
    refused = run.by_id["at-01"]
    assert (refused["meta_error_code"], refused["retryable"], refused["retry_after"]) == \
        (131056, True, "2026-11-26T12:00:06.000Z")
    assert run.by_id["at-08"]["retry_after"] == "2026-11-26T12:00:12.000Z"


def test_only_accepted_sends_use_the_pair_budget() -> None:
    lines = [send(f"burst-{n}", CA, hhmmss(0), template=UTILITY) for n in range(45)]
    lines += [send(f"refused-{n}", CA, hhmmss(3), template=UTILITY) for n in range(20)]
    lines += [send("marketing-opted-out", CA, hhmmss(3))]  # refused by another rule first
    lines.insert(0, event(TOPICS.preferences, preference(CA, "stop", hhmmss(-60))))
    lines += [send("at-06", CA, hhmmss(6), template=UTILITY)]
    run = Run(lines)
    assert {run.code(f"refused-{n}") for n in range(20)} == {"PAIR_RATE_LIMITED"}
    opted_out = run.by_id["marketing-opted-out"]
    assert opted_out["violations"] == ["MARKETING_OPTED_OUT", "PAIR_RATE_LIMITED"]
    assert opted_out["retry_after"] is None  # the first rule's, which knows none
    assert run.code("at-06") is None  # the refusals took nothing from the budget


def test_pair_rate_in_monitor_mode_accepts_and_reports() -> None:
    policies = policy_with(rules__PAIR_RATE_LIMITED__mode="monitor")
    lines = [send(f"burst-{n}", CA, hhmmss(0), template=UTILITY) for n in range(47)]
    run = Run(lines, policies)
    assert all(run.code(f"burst-{n}") is None for n in range(47))
    assert [run.by_id[f"burst-{n}"]["monitored"] for n in (44, 45, 46)] == [
        [], ["PAIR_RATE_LIMITED"], ["PAIR_RATE_LIMITED"]]
    assert run.check.summary.monitored["PAIR_RATE_LIMITED"] == 2
    assert "PAIR_RATE_LIMITED: 2" in run.check.summary.render()


def test_pair_rate_figures_come_from_the_policy() -> None:
    policies = policy_with(parameters__pair_rate_burst=2, parameters__pair_rate_interval_seconds=60)
    run = Run([send("a", CA, hhmmss(0), template=UTILITY),
               send("b", CA, hhmmss(0), template=UTILITY),
               send("c", CA, hhmmss(30), template=UTILITY),
               send("d", CA, hhmmss(60), template=UTILITY)], policies)
    assert run.codes() == {"a": None, "b": None, "c": "PAIR_RATE_LIMITED", "d": None}
    assert run.by_id["c"]["retry_after"] == "2026-11-26T12:01:00.000Z"


# --- linked identities, offline --------------------------------------------------------------


@pytest.mark.parametrize("stop_first", [False, True])
def test_opt_out_for_the_bsuid_alone_blocks_marketing_to_the_number(stop_first: bool) -> None:
    link = event(TOPICS.inbound, meta_body("inbound_text_linking"))  # at noon
    stop = event(TOPICS.preferences, later(meta_body("user_preferences_stop_bsuid_only"), 3600))
    run = Run([*([stop, link] if stop_first else [link, stop]),
               send("before-stop", CA, hhmmss(1800)),
               send("to-number", CA, hhmmss(7200)),
               send("to-bsuid", CA_BSUID, hhmmss(7200)),
               send("utility-to-number", CA, hhmmss(7200), template=UTILITY)])
    assert run.codes() == {"before-stop": None, "to-number": "MARKETING_OPTED_OUT",
                           "to-bsuid": "MARKETING_OPTED_OUT", "utility-to-number": None}
    assert run.enrichment("to-number")["recipient_kind"] == "phone"
    assert (run.enrichment("to-bsuid")["recipient_kind"],
            run.enrichment("to-bsuid")["recipient_e164"]) == ("bsuid", CA)


def test_inbound_from_the_number_opens_the_window_for_the_bsuid() -> None:
    run = Run([
        event(TOPICS.statuses, meta_body("status_delivered_linking")),  # BR and its BSUID
        free_form("closed", BR_BSUID, hhmmss(1800)),
        event(TOPICS.inbound, inbound(BR_WA, hhmmss(3600))),  # the number alone
        free_form("open", BR_BSUID, hhmmss(5400)),
    ])
    assert run.codes() == {"closed": "OUTSIDE_SERVICE_WINDOW", "open": None}
    assert run.enrichment("open")["recipient_e164"] == BR


def test_inbound_from_the_bsuid_alone_opens_the_window_for_the_number() -> None:
    run = Run([
        linking_status(CA_WA, CA_BSUID, hhmmss(-3600)),
        free_form("closed", CA, hhmmss(-60)),
        event(TOPICS.inbound, meta_body("inbound_text_bsuid_only")),  # no phone number
        free_form("open", CA, hhmmss(60)),
    ])
    assert run.codes() == {"closed": "OUTSIDE_SERVICE_WINDOW", "open": None}


def test_a_131049_for_the_bsuid_cools_down_the_number() -> None:
    run = Run([
        event(TOPICS.statuses, meta_body("status_delivered_linking")),
        event(TOPICS.statuses, later(meta_body("status_failed_131049_bsuid_only"), 3600)),
        send("number", BR, hhmmss(7200)),
        send("bsuid", BR_BSUID, hhmmss(7200)),
        send("next-day", BR, hhmmss(3600 + 86400)),
    ])
    assert run.codes() == {"number": "USER_MARKETING_TEMPLATE_LIMIT",
                           "bsuid": "USER_MARKETING_TEMPLATE_LIMIT", "next-day": None}
    assert run.by_id["number"]["retry_after"] == "2026-11-27T13:00:00.000Z"


def test_the_pair_budget_is_shared_by_the_two_identities() -> None:
    lines: list[dict[str, Any]] = [linking_status(CA_WA, CA_BSUID, hhmmss(-60))]
    lines += [send(f"burst-{n}", CA if n % 3 else CA_BSUID, hhmmss(0), template=UTILITY)
              for n in range(45)]
    lines += [send("number-01", CA, hhmmss(1), template=UTILITY),
              send("bsuid-01", CA_BSUID, hhmmss(1), template=UTILITY),
              send("bsuid-07", CA_BSUID, hhmmss(7), template=UTILITY),
              send("number-08", CA, hhmmss(8), template=UTILITY)]
    run = Run(lines)
    assert all(run.code(f"burst-{n}") is None for n in range(45))
    assert {key: run.code(key) for key in ("number-01", "bsuid-01", "bsuid-07", "number-08")} \
        == {"number-01": "PAIR_RATE_LIMITED", "bsuid-01": "PAIR_RATE_LIMITED",
            "bsuid-07": None, "number-08": "PAIR_RATE_LIMITED"}
    assert run.by_id["bsuid-01"]["retry_after"] == "2026-11-26T12:00:06.000Z"


def test_an_unlinked_bsuid_has_its_own_pair_budget() -> None:
    lines = [send(f"burst-{n}", CA, hhmmss(0), template=UTILITY) for n in range(45)]
    lines += [send("bsuid", CA_BSUID, hhmmss(1), template=UTILITY)]
    assert Run(lines).code("bsuid") is None  # nothing says it is the same user


def test_a_newer_link_for_the_number_replaces_the_older_bsuid() -> None:
    old, new = "CA.1111", "CA.2222"
    run = Run([
        linking_status(CA_WA, old, hhmmss(-4 * 3600)),
        event(TOPICS.preferences, preference(old, "stop", hhmmss(-3 * 3600))),
        send("linked-to-old", CA, hhmmss(-2 * 3600 - 1800)),
        linking_status(CA_WA, new, hhmmss(-2 * 3600)),  # Meta gave the number a new BSUID
        send("number", CA, hhmmss(0)),
        send("old-bsuid", old, hhmmss(0)),
        send("new-bsuid", new, hhmmss(0)),
    ])
    assert run.codes() == {"linked-to-old": "MARKETING_OPTED_OUT", "number": None,
                           "old-bsuid": "MARKETING_OPTED_OUT", "new-bsuid": None}
    assert run.enrichment("old-bsuid")["recipient_e164"] is None  # on its own again
    assert run.enrichment("new-bsuid")["recipient_e164"] == CA


def test_an_older_link_arriving_later_is_ignored() -> None:
    old, new = "CA.1111", "CA.2222"
    run = Run([
        linking_status(CA_WA, new, hhmmss(-2 * 3600)),
        event(TOPICS.preferences, preference(old, "stop", hhmmss(-3 * 3600))),
        linking_status(CA_WA, old, hhmmss(-4 * 3600)),  # stamped before the link to `new`
        send("number", CA, hhmmss(0)),
        send("old-bsuid", old, hhmmss(0)),
        send("new-bsuid", new, hhmmss(0)),
    ])
    assert run.codes() == {"number": None, "old-bsuid": "MARKETING_OPTED_OUT",
                           "new-bsuid": None}
    assert run.enrichment("old-bsuid")["recipient_e164"] is None
    assert run.enrichment("new-bsuid")["recipient_e164"] == CA


def test_a_newer_link_for_the_bsuid_moves_it_to_the_other_number() -> None:
    other = "+14165550199"
    run = Run([
        linking_status(CA_WA, CA_BSUID, hhmmss(-4 * 3600)),
        event(TOPICS.preferences, preference(CA_BSUID, "stop", hhmmss(-3 * 3600))),
        send("first-number", CA, hhmmss(-2 * 3600 - 1800)),
        linking_status(other[1:], CA_BSUID, hhmmss(-2 * 3600)),
        send("first-number-after", CA, hhmmss(0)),
        send("other-number", other, hhmmss(0)),
        send("bsuid", CA_BSUID, hhmmss(0)),
        linking_status(CA_WA, CA_BSUID, hhmmss(-3 * 3600)),  # older than the move: ignored
        send("first-number-last", CA, hhmmss(0)),
    ])
    assert run.codes() == {"first-number": "MARKETING_OPTED_OUT", "first-number-after": None,
                           "other-number": "MARKETING_OPTED_OUT",
                           "bsuid": "MARKETING_OPTED_OUT", "first-number-last": None}
    assert run.enrichment("bsuid")["recipient_e164"] == other


def test_a_parent_bsuid_links_like_a_bsuid() -> None:
    run = Run([
        event(TOPICS.inbound, meta_body("inbound_text_linking")),  # number, BSUID and parent
        event(TOPICS.preferences, preference(CA_PARENT, "stop", hhmmss(60))),
        send("number", CA, hhmmss(120)),
        send("bsuid", CA_BSUID, hhmmss(120)),
        send("parent", CA_PARENT, hhmmss(120)),
        free_form("parent-window", CA_PARENT, hhmmss(120)),  # the inbound at noon
    ])
    assert run.codes() == {"number": "MARKETING_OPTED_OUT", "bsuid": "MARKETING_OPTED_OUT",
                           "parent": "MARKETING_OPTED_OUT", "parent-window": None}
    assert run.enrichment("parent")["recipient_kind"] == "parent_bsuid"


def test_a_link_belongs_to_one_tenant() -> None:
    run = Run([
        linking_status(CA_WA, CA_BSUID, hhmmss(-3600)),  # acme's
        event(TOPICS.preferences, preference(CA_BSUID, "stop", hhmmss(-1800), "globex")),
        event(TOPICS.preferences, preference(CA_BSUID, "stop", hhmmss(-1800), "initech")),
        event(TOPICS.statuses, {**status(CA_WA, None, hhmmss(-1800), "initech",
                                         state="delivered"), "user_id": "CA.999"}),
        send("acme", CA, hhmmss(0)),
        send("globex", CA, hhmmss(0), tenant_id="globex"),
        send("initech", CA, hhmmss(0), tenant_id="initech"),
    ])
    assert run.codes() == {"acme": None, "globex": None, "initech": None}


# --- BSUID-only webhook bodies -------------------------------------------------------------


def test_bsuid_only_webhook_bodies_change_state() -> None:
    run = Run([
        free_form("window-closed", CA_BSUID, hhmmss(-60)),
        send("marketing-before", CA_BSUID, hhmmss(-60)),
        send("br-before", BR_BSUID, hhmmss(-60)),
        event(TOPICS.inbound, meta_body("inbound_text_bsuid_only")),
        event(TOPICS.preferences, meta_body("user_preferences_stop_bsuid_only")),
        event(TOPICS.statuses, meta_body("status_failed_131049_bsuid_only")),
        free_form("window-open", CA_BSUID, hhmmss(60)),
        send("opted-out", CA_BSUID, hhmmss(60)),
        send("cooled-down", BR_BSUID, hhmmss(60)),
        free_form("number-not-linked", CA, hhmmss(60)),
    ])
    assert run.codes() == {
        "window-closed": "OUTSIDE_SERVICE_WINDOW", "marketing-before": None, "br-before": None,
        "window-open": None, "opted-out": "MARKETING_OPTED_OUT",
        "cooled-down": "USER_MARKETING_TEMPLATE_LIMIT",
        "number-not-linked": "OUTSIDE_SERVICE_WINDOW"}
    assert run.check.summary.state_events == len(CATALOG) + 3


def test_the_webhooks_topic_carries_bsuid_bodies_too() -> None:
    run = Run([
        event(TOPICS.webhooks, meta_body("inbound_text_linking")),
        event(TOPICS.webhooks, later(meta_body("user_preferences_stop_bsuid_only"), 60)),
        send("number", CA, hhmmss(120)),
    ])
    assert run.code("number") == "MARKETING_OPTED_OUT"


def test_an_invalid_bsuid_in_a_webhook_is_a_dead_letter() -> None:
    body = meta_body("status_failed_131049_bsuid_only")
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_user_id"] = "ZZ.1502"
    run = Run([event(TOPICS.statuses, body), send("after", BR_BSUID, hhmmss(60))])
    assert run.dead() == ["schema_invalid"]
    assert run.code("after") is None  # nothing was applied


def test_a_link_field_without_a_valid_bsuid_links_nothing() -> None:
    run = Run([
        linking_status(CA_WA, "ZZ.1", hhmmss(-3600)),
        linking_status(CA_WA, CA_PARENT, hhmmss(-3500)),  # a parent BSUID is no user_id
        event(TOPICS.preferences, preference(CA_PARENT, "stop", hhmmss(-1800))),
        send("number", CA, hhmmss(0)),
    ])
    assert run.dead() == []
    assert run.code("number") is None


# --- the pure pieces of linking ----------------------------------------------------------------


def test_named_links() -> None:
    document = {"sender": CA_WA, "user_id": CA_BSUID, "parent_user_id": CA_PARENT}
    assert ids.named_links(document, CA_WA) == [(BSUID, CA_BSUID), (PARENT_BSUID, CA_PARENT)]
    # Only a phone number links; a field whose value is not a BSUID of its kind links nothing.
    assert ids.named_links({**document, "sender": CA_BSUID}, CA_BSUID) == []
    assert ids.named_links({"user_id": CA_PARENT, "parent_user_id": CA_BSUID}, CA) == []
    assert ids.named_links({"user_id": "ZZ.1", "parent_user_id": 5}, CA) == []


def test_combine_merges_the_histories_of_linked_identities() -> None:
    number = st.with_decided(st.apply_inbound(EMPTY, inbound(CA, hhmmss(-60))), "m-1", NOON)
    number, _, _ = ids.link(number, BSUID, CA_BSUID, NOON - 3600)
    bsuid = st.apply_preference(EMPTY, preference(CA_BSUID, "stop", hhmmss(-30)))
    bsuid = st.apply_status(bsuid, status(CA_BSUID, 131049, hhmmss(-20)))
    bsuid, _, _ = ids.claim(bsuid, CA, NOON - 3600)
    combined = st.combine([number, bsuid], NOON)
    assert st.last_inbound(combined, NOON) == NOON - 60
    assert st.preference_at(combined, NOON) == "stop"
    assert st.last_limit_hit(combined, NOON) == NOON - 20
    assert st.already_decided(combined, "m-1")
    assert combined.links == () and combined.home is None  # the links stay out


def test_combine_keeps_the_newest_messaging_limit_slot() -> None:
    # A user counted lately under one identity holds its slot under all of them, even when
    # another identity holds an older, closed one.
    old = st.with_slot(EMPTY, NOON - 2 * st.SLOT_SECONDS)
    new = st.with_slot(EMPTY, NOON - 3600)
    for states in ([old, new], [new, old]):
        combined = st.combine(states, NOON)
        assert combined.slot == NOON - 3600
        assert st.slot_open(combined, NOON)
    assert st.combine([old, EMPTY], NOON).slot == old.slot


def test_combine_adds_up_pair_budgets() -> None:
    number, bsuid = EMPTY, EMPTY
    for _ in range(30):
        number = st.with_send(number, "", NOON, 6.0)
    for _ in range(15):
        bsuid = st.with_send(bsuid, "", NOON, 6.0)
    assert st.pair_retry(number, "", NOON, 45, 6.0) is None
    assert st.pair_retry(bsuid, "", NOON, 45, 6.0) is None
    combined = st.combine([number, bsuid], NOON)  # 45 sends between them: the 46th waits
    assert st.pair_retry(combined, "", NOON, 45, 6.0) == NOON + 6
    assert st.pair_retry(combined, "+15550783882", NOON, 45, 6.0) is None


def test_the_pair_budget_clock_never_runs_backwards() -> None:
    state = EMPTY
    for _ in range(45):
        state = st.with_send(state, "", NOON, 6.0)
    # A send dated before the last one (an unsorted file) counts as if sent with it.
    assert st.pair_retry(state, "", NOON - 600, 45, 6.0) == NOON + 6


def test_state_with_pair_budget_and_links_round_trips() -> None:
    number = st.with_send(st.apply_inbound(EMPTY, inbound(CA, hhmmss(0))), "+15550783881",
                          NOON, 6.0)
    number, _, _ = ids.link(number, BSUID, CA_BSUID, NOON)
    bsuid, _, _ = ids.claim(EMPTY, CA, NOON)
    for state in (number, bsuid):
        assert st.from_json(orjson.loads(orjson.dumps(st.to_json(state)))) == state
    # A value written before pair budgets and links (four fields) still loads.
    legacy = st.from_json([[NOON], [[NOON, "stop"]], [], [[NOON, "m-1"]]])
    assert (legacy.inbound, legacy.pair, legacy.links, legacy.home) == ((NOON,), (), (), None)


def test_the_same_link_again_moves_its_time_and_outranks_links_between() -> None:
    # The number's side: seen again at 30, the link to CA.1 is newer than one to CA.2
    # stamped 20, which is then stale (it would replace CA.1 had the time stayed at 10).
    head, _, _ = ids.link(EMPTY, BSUID, "CA.1", 10.0)
    head, replaced, changed = ids.link(head, BSUID, "CA.1", 30.0)
    assert (head.links, replaced, changed) == (((BSUID, "CA.1", 30.0),), None, False)
    assert ids.link(head, BSUID, "CA.2", 20.0) == (head, None, False)
    # The BSUID's side, alike: claimed by CA again at 30, a claim by another number at 20
    # is stale.
    member, _, _ = ids.claim(EMPTY, CA, 10.0)
    member, before, changed = ids.claim(member, CA, 30.0)
    assert (member.home, before, changed) == ((CA, 30.0), None, False)
    assert ids.claim(member, "+14165550199", 20.0) == (member, None, False)


def test_a_bsuid_state_is_not_empty_while_it_is_linked() -> None:
    bsuid, _, changed = ids.claim(EMPTY, CA, NOON)
    assert changed and not bsuid.is_empty()
    assert ids.claim_released(bsuid).is_empty()


def test_the_newest_link_wins_after_a_stale_one() -> None:
    other = "+14165550199"
    run = Run([
        linking_status(CA_WA, CA_BSUID, hhmmss(-4 * 3600)),
        event(TOPICS.preferences, preference(CA_BSUID, "stop", hhmmss(-3 * 3600))),
        linking_status(other[1:], CA_BSUID, hhmmss(-2 * 3600)),  # moves to the other number
        linking_status(CA_WA, CA_BSUID, hhmmss(-3 * 3600)),  # stale: ignored
        linking_status(CA_WA, CA_BSUID, hhmmss(-3600)),  # the newest: back with CA
        send("number", CA, hhmmss(0)),
        send("other-number", other, hhmmss(0)),
    ])
    assert run.codes() == {"number": "MARKETING_OPTED_OUT", "other-number": None}
