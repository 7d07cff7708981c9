"""deploy/prometheus and deploy/grafana: promtool checks and tests, and a fresh dashboard."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package "
                    "(apt-get install prometheus), as .ci/run does")
    return path


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alert_rules_check() -> None:
    assert "SUCCESS" in run(promtool(), "check", "rules",
                            str(DEPLOY / "prometheus/rules/outbound-gate.rules.yml"))


def test_alert_rules_unit_tests() -> None:
    assert "SUCCESS" in run(promtool(), "test", "rules",
                            str(DEPLOY / "prometheus/tests/outbound-gate.rules.test.yml"))


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus/rules/outbound-gate.rules.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus/tests/outbound-gate.rules.test.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]
              if case.get("exp_alerts")}
    assert alerts == tested, f"alerts never seen firing in a test: {alerts - tested}"


def test_scrape_config_check() -> None:
    assert "SUCCESS" in run(promtool(), "check", "config",
                            str(DEPLOY / "prometheus/prometheus.yml"))


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    run(sys.executable, str(DEPLOY / "grafana/generate_dashboard.py"), "--check")
