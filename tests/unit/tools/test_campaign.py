"""Campaign pre-flight: CSV input, summary table, and the self-contained HTML report."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from processors.cli.main import main
from tests.factories import template_entry

NUMBERS = ["+12025550143", "+14165550123", "5511912345678", "07400 123456", "+1202555"]


def campaign(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "tpl", "region"])
        for index in range(rows):
            number = NUMBERS[index % len(NUMBERS)]
            writer.writerow([number, "promo" if index % 3 else "notice",
                             "GB" if number.startswith("0") else ""])
    return path


def test_csv_campaign_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "catalog.jsonl"
    state.write_text("\n".join(json.dumps({"topic": "whatsapp.templates", "value": entry})
                               for entry in (template_entry("promo", "MARKETING"),
                                             template_entry("notice", "UTILITY"))) + "\n")
    report = tmp_path / "report.html"
    out = tmp_path / "decisions.jsonl"
    code = main(["check", str(campaign(tmp_path / "spring.csv", 150)), "--tenant", "acme",
                 "--language", "en_US", "--origin", "automation", "--recipient-column",
                 "phone", "--template-column", "tpl", "--region-column", "region",
                 "--state", str(state), "--report", str(report), "--output", str(out),
                 "--at", "2026-11-26T12:00:00Z"])
    err = capsys.readouterr().err
    assert code == 0, err
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 150
    codes = {r["error_code"] for r in results}
    assert codes == {None, "MARKETING_PAUSED_US", "INVALID_RECIPIENT"}
    us_notice = [r for r in results if r["message_id"] == "row-3"]  # +1202..., notice
    assert us_notice[0]["decision"] == "accepted"
    assert results[3]["enrichment"]["recipient_region"] == "GB"  # national number + region
    assert re.search(r"MARKETING_PAUSED_US\s+20\s", err)
    assert re.search(r"  US\s+30\s+20", err)
    page = report.read_text()
    for title in ("Rejections by error code", "Rejections by recipient country",
                  "Rejections by template category"):
        assert title in page
    assert page.count("<svg") == 3
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the report loads nothing"


def test_csv_missing_column_gives_dead_letter_lines(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("number,template\n+14165550123,promo\n")
    out = tmp_path / "out.jsonl"
    assert main(["check", str(source), "--tenant", "acme", "--language", "en",
                 "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["decision"] == "dead_letter" and result["line"] == 2
    assert "recipient" in result["error"]
