"""`outbound-gate check` on files that mix every input topic, including per-recipient rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processors.cli.main import main
from tests.factories import inbound, message, preference, status, template_entry

CA = "+14165550123"
BR_WA_ID = "5511912345678"


def envelope(topic: str, value: Any, key: str | None = None) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return path


def check(tmp_path: Path, lines: list[Any], *extra: str,
          capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    source = write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    code = main(["check", str(source), "--output", str(out), *extra])
    results = [json.loads(line) for line in out.read_text().splitlines()]
    return code, results, capsys.readouterr().err


def by_id(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["message_id"]: r for r in results if "message_id" in r}


def test_mixed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[Any] = [
        envelope("whatsapp.templates", template_entry("promo", "MARKETING", "APPROVED")),
        envelope("whatsapp.templates", template_entry("notice", "UTILITY", "APPROVED")),
        message(message_id="us", recipient="+12025550143",
                created_at="2026-11-26T09:00:00Z"),
        message(message_id="us-utility", recipient="+12025550143",
                template={"name": "notice", "language": "en_US"}),
        message(message_id="ca", recipient=CA),
        # a 131049 at 10:00, then a marketing send at 12:00 and one the next day at 10:00
        envelope("whatsapp.statuses", status(BR_WA_ID, 131049, "2026-11-26T10:00:00Z")),
        message(message_id="br-limited", recipient="+" + BR_WA_ID),
        message(message_id="br-after", recipient="+" + BR_WA_ID,
                created_at="2026-11-27T10:00:00Z"),
        # the service window: free-form before and after an inbound message
        message(message_id="ff-closed", recipient=CA, kind="free_form", template=None,
                created_at="2026-11-26T08:00:00Z"),
        envelope("whatsapp.inbound", inbound("14165550123", "2026-11-26T09:00:00Z")),
        message(message_id="ff-open", recipient=CA, kind="free_form", template=None,
                created_at="2026-11-26T10:00:00Z"),
        message(message_id="ff-expired", recipient=CA, kind="free_form", template=None,
                created_at="2026-11-27T09:00:01Z"),
        # opt-out then resume
        envelope("whatsapp.user-preferences", preference(CA, "stop", "2026-11-26T13:00:00Z")),
        message(message_id="ca-stopped", recipient=CA, created_at="2026-11-26T14:00:00Z"),
        envelope("whatsapp.user-preferences", preference(CA, "resume", "2026-11-26T15:00:00Z")),
        message(message_id="ca-resumed", recipient=CA, created_at="2026-11-26T16:00:00Z"),
        # a catalog change takes effect for later messages
        envelope("whatsapp.templates", template_entry("promo", "MARKETING", "PAUSED",
                                                      updated_at="2026-11-26T17:00:00Z")),
        message(message_id="ca-paused", recipient=CA, created_at="2026-11-26T18:00:00Z"),
        "this is not json",
        message(message_id="bad", kind="carrier-pigeon"),
        envelope("no.such.topic", {}),
    ]
    code, results, err = check(tmp_path, lines, capsys=capsys)
    assert code == 0
    got = by_id(results)
    expected = {
        "us": "MARKETING_PAUSED_US", "us-utility": None, "ca": None,
        "br-limited": "USER_MARKETING_TEMPLATE_LIMIT", "br-after": None,
        "ff-closed": "OUTSIDE_SERVICE_WINDOW", "ff-open": None,
        "ff-expired": "OUTSIDE_SERVICE_WINDOW", "ca-stopped": "MARKETING_OPTED_OUT",
        "ca-resumed": None, "ca-paused": "TEMPLATE_PAUSED",
    }
    assert {k: v["error_code"] for k, v in got.items()} == expected
    for result in got.values():
        assert result["decision"] == ("accepted" if result["error_code"] is None else "rejected")
    assert got["us"]["meta_error_code"] == 131049
    assert got["us"]["enrichment"]["recipient_region"] == "US"
    assert got["us"]["enrichment"]["category_source"] == "catalog"
    assert got["br-limited"]["retry_after"] == "2026-11-27T10:00:00.000Z"
    assert got["ff-open"]["enrichment"]["template_category"] is None
    dead = [r for r in results if r["decision"] == "dead_letter"]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (19, "not_json"), (20, "schema_invalid"), (21, "schema_invalid")]
    assert "no.such.topic" in dead[2]["error"]
    assert "accepted=5" in err and "rejected=6" in err and "dead_letter=3" in err
    assert re.search(r"MARKETING_PAUSED_US\s+1\s", err)
    assert re.search(r"  CA\s+7\s+4", err)  # by country: messages, rejected


def test_fixed_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [message(message_id="us", recipient="+12025550143")]
    _, before, _ = check(tmp_path, lines, "--at", "2025-03-31T12:00:00Z", capsys=capsys)
    _, after, _ = check(tmp_path, lines, "--at", "2025-04-01T00:00:00Z", capsys=capsys)
    assert before[0]["decision"] == "accepted"
    assert after[0]["error_code"] == "MARKETING_PAUSED_US"


def test_catalog_tombstone_and_newest_wins(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    key = "acme:promo:en_US"
    lines: list[Any] = [
        envelope("whatsapp.templates", template_entry(status="DISABLED",
                                                      updated_at="2026-11-02T00:00:00Z")),
        # older entry arriving later loses
        envelope("whatsapp.templates", template_entry(status="APPROVED",
                                                      updated_at="2026-11-01T00:00:00Z")),
        message(message_id="disabled", recipient=CA),
        envelope("whatsapp.templates", None, key=key),
        message(message_id="gone", recipient=CA),
    ]
    _, results, _ = check(tmp_path, lines, capsys=capsys)
    got = by_id(results)
    assert got["disabled"]["error_code"] == "TEMPLATE_DISABLED"
    assert got["gone"]["error_code"] is None
    assert got["gone"]["enrichment"]["category_source"] == "default"


def test_policy_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from processors.core.policy import load_policy

    document = json.loads(json.dumps(dict(load_policy().document)))
    document["rules"]["MARKETING_PAUSED_US"]["mode"] = "monitor"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(document))
    _, results, err = check(tmp_path, [message(recipient="+12025550143")], "--policy",
                            str(policy), capsys=capsys)
    assert results[0]["decision"] == "accepted"
    assert results[0]["monitored"] == ["MARKETING_PAUSED_US"]
    assert "MARKETING_PAUSED_US: 1" in err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "in.jsonl", [message()])
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot open" in capsys.readouterr().err
    assert main(["check", str(source), "--at", "yesterday"]) == 2
    assert "RFC 3339" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["check"])
    assert caught.value.code == 2


def test_console_script_reads_stdin_and_writes_stdout() -> None:
    line = json.dumps(message(recipient="+12025550143")) + "\n"
    result = subprocess.run([sys.executable, "-m", "processors.cli.main", "check", "-"],
                            input=line, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["error_code"] == "MARKETING_PAUSED_US"
    assert "rejected=1" in result.stderr
