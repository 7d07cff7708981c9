"""The offline check with Meta's webhook bodies as envelope values, and `catalog import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from processors.cli.main import main
from tests.factories import FIXTURES, message, meta_body, template_entry
from tests.unit.tools.test_offline_check import by_id, check

T = "2026-11-26T12:00:00Z"  # the fixtures' timestamp
BR = "5511912345678"
BR_AD = "5511987654321"
CA = "14165550123"
US = "+12025550143"


def raw(topic: str, body: dict[str, Any], tenant: str | None = "acme",
        **extra: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {"topic": topic, "key": None, "value": body, **extra}
    if tenant is not None:
        envelope["headers"] = {"tenant_id": tenant}
    return envelope


def at(body: dict[str, Any], hours: int) -> dict[str, Any]:
    """The body with every timestamp `hours` after the fixture's."""
    text = json.dumps(body).replace("1795694400", str(1795694400 + hours * 3600))
    result: dict[str, Any] = json.loads(text)
    return result


def send(tenant: str, recipient: str, created: str, **overrides: Any) -> dict[str, Any]:
    fields = {"message_id": f"{tenant}-{created}", "tenant_id": tenant,
              "recipient": recipient, "created_at": created, **overrides}
    return message(**fields)


def free_form(tenant: str, recipient: str, created: str) -> dict[str, Any]:
    return send(tenant, recipient, created, kind="free_form", template=None,
                message_id=f"{tenant}-ff-{created}")


def codes(results: list[dict[str, Any]]) -> dict[str, str | None]:
    return {k: v["error_code"] for k, v in by_id(results).items()}


def test_statuses_with_meta_error_codes(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        raw("whatsapp.statuses", meta_body("status_failed_131049"), "t49"),
        send("t49", BR, "2026-11-26T13:00:00Z"),
        raw("whatsapp.statuses", meta_body("status_failed_131050"), "t50"),
        send("t50", BR, "2026-11-26T13:00:00Z"),
        raw("whatsapp.statuses", meta_body("status_failed_130472"), "t472"),
        send("t472", BR, "2026-11-26T13:00:00Z"),
        raw("whatsapp.statuses", meta_body("status_delivered"), "t472"),
    ]
    _, results, err = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {
        "t49-2026-11-26T13:00:00Z": "USER_MARKETING_TEMPLATE_LIMIT",
        "t50-2026-11-26T13:00:00Z": "MARKETING_OPTED_OUT",
        # Meta's marketing experiment holds marketing to the user back (the gate's hold)
        "t472-2026-11-26T13:00:00Z": "USER_IN_MARKETING_EXPERIMENT",
    }
    assert by_id(results)["t49-2026-11-26T13:00:00Z"]["retry_after"] == \
        "2026-11-27T12:00:00.000Z"
    assert "state events applied: 4" in err


def test_130472_holds_marketing_until_marketing_is_delivered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    delivered = at(meta_body("status_delivered"), 2)
    delivered["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_id"] = BR
    lines = [
        raw("whatsapp.statuses", meta_body("status_failed_130472")),
        send("acme", BR, "2026-11-26T13:00:00Z"),
        send("acme", BR, "2026-11-26T13:00:01Z", template={"name": "notice",
                                                           "language": "en_US",
                                                           "category": "UTILITY"}),
        raw("whatsapp.webhooks", delivered),  # a marketing message delivered at 14:00
        send("acme", BR, "2026-11-26T14:00:01Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": "USER_IN_MARKETING_EXPERIMENT",
                              "acme-2026-11-26T13:00:01Z": None,
                              "acme-2026-11-26T14:00:01Z": None}
    held = by_id(results)["acme-2026-11-26T13:00:00Z"]
    assert (held["meta_error_code"], held["retryable"]) == (130472, False)


def test_a_call_from_the_user_opens_the_window_a_business_call_does_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        raw("whatsapp.webhooks", meta_body("calls_connect_business_initiated")),
        free_form("acme", "+14165550123", "2026-11-26T12:30:00Z"),
        raw("whatsapp.webhooks", at(meta_body("calls_connect_user_initiated"), 1)),
        free_form("acme", "+14165550123", "2026-11-26T13:30:00Z"),
        free_form("acme", "CA.13491208655302741918", "2026-11-26T13:30:01Z"),  # linked by it
        free_form("acme", "+14165550123", "2026-11-27T13:30:00Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-ff-2026-11-26T12:30:00Z": "OUTSIDE_SERVICE_WINDOW",
                              "acme-ff-2026-11-26T13:30:00Z": None,
                              "acme-ff-2026-11-26T13:30:01Z": None,
                              "acme-ff-2026-11-27T13:30:00Z": "OUTSIDE_SERVICE_WINDOW"}


def test_inbound_text_and_ad_referral_open_the_window(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        free_form("acme", CA, "2026-11-26T11:00:00Z"),
        raw("whatsapp.inbound", meta_body("inbound_text")),
        free_form("acme", CA, "2026-11-26T13:00:00Z"),
        raw("whatsapp.inbound", meta_body("inbound_ad_referral")),
        free_form("acme", BR_AD, "2026-11-26T13:00:00Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    decided = [(r["enrichment"]["recipient_e164"], r["error_code"]) for r in results]
    assert decided == [("+" + CA, "OUTSIDE_SERVICE_WINDOW"), ("+" + CA, None),
                       ("+" + BR_AD, None)]


def test_user_preferences_stop_then_resume(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        raw("whatsapp.user-preferences", meta_body("user_preferences_stop")),
        send("acme", CA, "2026-11-26T13:00:00Z"),
        raw("whatsapp.user-preferences", at(meta_body("user_preferences_resume"), 2)),
        send("acme", CA, "2026-11-26T15:00:00Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": "MARKETING_OPTED_OUT",
                              "acme-2026-11-26T15:00:00Z": None}


def test_template_status_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[Any] = []
    for tenant, name in [("p", "paused"), ("a", "approved"), ("d", "disabled")]:
        lines.append({"topic": "whatsapp.templates", "key": f"{tenant}:promo:en_US",
                      "value": template_entry(tenant_id=tenant, status="PENDING",
                                              updated_at="2026-11-01T00:00:00Z")})
        lines.append(raw("whatsapp.templates", meta_body(f"template_status_{name}"), tenant))
        lines.append(send(tenant, CA, "2026-11-26T13:00:00Z"))
    lines.append(send("p", CA, "2026-11-26T11:00:00Z"))  # before the pause: still pending
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    got = by_id(results)
    assert codes(results) == {
        "p-2026-11-26T13:00:00Z": "TEMPLATE_PAUSED", "a-2026-11-26T13:00:00Z": None,
        "d-2026-11-26T13:00:00Z": "TEMPLATE_DISABLED",
        "p-2026-11-26T11:00:00Z": "TEMPLATE_NOT_APPROVED"}
    # The status updates carry no category: the catalog kept the one it knew.
    assert got["p-2026-11-26T13:00:00Z"]["enrichment"]["category_source"] == "catalog"


def test_category_update_to_marketing(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    welcome = {"name": "welcome_template", "language": "en_US"}
    lines = [
        {"topic": "whatsapp.templates", "key": "acme:welcome_template:en_US",
         "value": template_entry("welcome_template", "UTILITY", "APPROVED",
                                 "2026-11-01T00:00:00Z")},
        raw("whatsapp.templates", meta_body("template_category_update_marketing")),
        send("acme", US, "2026-11-26T11:00:00Z", template=welcome),
        send("acme", US, "2026-11-26T13:00:00Z", template=welcome),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    got = by_id(results)
    assert codes(results) == {"acme-2026-11-26T11:00:00Z": None,
                              "acme-2026-11-26T13:00:00Z": "MARKETING_PAUSED_US"}
    assert got["acme-2026-11-26T13:00:00Z"]["enrichment"]["template_category"] == "MARKETING"


def test_impending_category_update_counts_sends_until_due(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    welcome = {"name": "welcome_template", "language": "en_US"}
    lines = [
        {"topic": "whatsapp.templates", "key": "acme:welcome_template:en_US",
         "value": template_entry("welcome_template", "UTILITY", "APPROVED",
                                 "2026-11-01T00:00:00Z")},
        raw("whatsapp.templates", meta_body("template_category_update_impending")),
        send("acme", US, "2026-11-26T13:00:00Z", template=welcome),
        send("acme", US, "2026-11-27T13:00:00Z", template=welcome),
    ]
    _, results, err = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": None,
                              "acme-2026-11-27T13:00:00Z": "MARKETING_PAUSED_US"}
    assert "template sends before an announced recategorisation: 1" in err


def test_two_entries_with_the_tenant_map(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_map = tmp_path / "tenants.json"
    tenant_map.write_text(json.dumps({"waba:102290129340398": "acme",
                                      "phone:106540352242923": "globex"}))
    monkeypatch.setenv("OUTBOUND_GATE_TENANT_MAP", str(tenant_map))
    lines = [
        raw("whatsapp.statuses", meta_body("two_entries"), None),
        send("acme", BR, "2026-11-26T13:00:00Z"),
        free_form("globex", CA, "2026-11-26T13:00:00Z"),
        free_form("acme", CA, "2026-11-26T13:00:00Z"),  # the inbound was globex's
    ]
    _, results, err = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": "USER_MARKETING_TEMPLATE_LIMIT",
                              "globex-ff-2026-11-26T13:00:00Z": None,
                              "acme-ff-2026-11-26T13:00:00Z": "OUTSIDE_SERVICE_WINDOW"}
    assert "state events applied: 2" in err


def test_webhooks_topic_and_template_time_from_the_envelope(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paused = meta_body("template_status_paused")
    del paused["entry"][0]["time"]  # no time in the body: the envelope's (the record time)
    lines = [
        {"topic": "whatsapp.templates", "key": "acme:promo:en_US",
         "value": template_entry(updated_at="2026-11-01T00:00:00Z")},
        raw("whatsapp.webhooks", paused, timestamp="2026-11-26T12:30:00Z"),
        raw("whatsapp.webhooks", meta_body("status_failed_131049")),
        send("acme", CA, "2026-11-26T12:00:00Z"),
        send("acme", CA, "2026-11-26T13:00:00Z"),
        send("acme", BR, "2026-11-26T12:10:00Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T12:00:00Z": None,
                              "acme-2026-11-26T13:00:00Z": "TEMPLATE_PAUSED",
                              "acme-2026-11-26T12:10:00Z": "USER_MARKETING_TEMPLATE_LIMIT"}


def test_each_topic_applies_its_own_kind_as_live(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        raw("whatsapp.statuses", meta_body("template_status_paused")),  # not a state event
        raw("whatsapp.templates", meta_body("status_failed_131049")),  # not a catalog entry
        send("acme", BR, "2026-11-26T13:00:00Z"),
    ]
    _, results, err = check(tmp_path, lines, capsys=capsys)
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": None}
    assert "state events applied: 0" in err


def test_dead_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        raw("whatsapp.statuses", meta_body("status_failed_131049"), None),
        raw("whatsapp.inbound", {"object": "page", "entry": []}),
        raw("whatsapp.webhooks", {"tenant_id": "acme", "sender": CA, "timestamp": T}),
        send("acme", BR, "2026-11-26T13:00:00Z"),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    dead = [(r["line"], r["reason"]) for r in results if r["decision"] == "dead_letter"]
    assert dead == [(1, "no_tenant"), (2, "not_meta_webhook"), (3, "not_meta_webhook")]
    assert codes(results) == {"acme-2026-11-26T13:00:00Z": None}  # nothing was applied


def test_catalog_import_dry_run_reads_concatenated_pages(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "import", str(FIXTURES / "template_list.json"), "--tenant", "acme",
                 "--dry-run"]) == 0
    out, err = capsys.readouterr()
    envelopes = [json.loads(line) for line in out.splitlines()]
    assert [(e["topic"], e["key"], e["value"]["status"], e["value"]["category"])
            for e in envelopes] == [
        ("whatsapp.templates", "acme:promo:en_US", "APPROVED", "MARKETING"),
        ("whatsapp.templates", "acme:order_update:pt_BR", "PAUSED", "UTILITY"),
        ("whatsapp.templates", "acme:login_code:en_US", "APPROVED", "AUTHENTICATION"),
        ("whatsapp.templates", "acme:old_promo:en_US", "DISABLED", "MARKETING"),
    ]
    assert "skipped draft:en_US: status 'LIMIT_EXCEEDED'" in err
    assert "4 entries for tenant acme (dry run), 1 skipped" in err


def test_catalog_import_envelopes_feed_the_offline_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["catalog", "import", str(FIXTURES / "template_list.json"), "--tenant", "acme",
          "--dry-run"])
    state = tmp_path / "catalog.jsonl"
    state.write_text(capsys.readouterr().out)
    source = tmp_path / "in.jsonl"
    paused = send("acme", CA, "2099-01-01T00:00:00Z",
                  template={"name": "order_update", "language": "pt_BR"})
    source.write_text(json.dumps(paused) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["check", str(source), "--state", str(state), "--output", str(out)]) == 0
    [result] = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["error_code"] == "TEMPLATE_PAUSED"


def test_catalog_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [], "paging": {}}\n{"oops"')
    assert main(["catalog", "import", str(bad), "--tenant", "acme", "--dry-run"]) == 1
    assert "page 2 is not JSON" in capsys.readouterr().err
    bad.write_text('{"templates": []}')
    assert main(["catalog", "import", str(bad), "--tenant", "acme", "--dry-run"]) == 1
    assert "expected" in capsys.readouterr().err
    assert main(["catalog", "import", str(tmp_path / "missing.json"), "--tenant", "a"]) == 1
    with pytest.raises(SystemExit):
        main(["catalog", "import", str(bad)])  # --tenant is required
