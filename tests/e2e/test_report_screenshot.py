"""The pre-flight HTML report rendered in headless Chromium, with its charts on the page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from processors.cli.main import main
from tests.unit.tools.test_campaign import campaign

SHOTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not found: install Debian's chromium package, as .ci/run does")


def test_report_renders_its_charts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.html"
    assert main(["check", str(campaign(tmp_path / "c.csv", 300)), "--tenant", "acme",
                 "--language", "en_US", "--recipient-column", "phone", "--template-column",
                 "tpl", "--region-column", "region", "--report", str(report), "--output",
                 str(tmp_path / "out.jsonl"), "--at", "2026-11-26T12:00:00Z"]) == 0
    capsys.readouterr()
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}"]
    # The DOM after rendering: the three charts' bars are there, nothing failed to load.
    dom = subprocess.run([*browser, "--dump-dom", report.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 3 and dom.stdout.count("<rect") >= 5
    shot = tmp_path / "report.png"
    result = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1000,1300",
                             report.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000, "an empty-looking screenshot"
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(shot, SHOTS / "report-screenshot.png")  # for a person to look at
