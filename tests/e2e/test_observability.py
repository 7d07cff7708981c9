"""What SREs watch: a real Prometheus scraping a real worker after a burst of real traffic.

Every dashboard panel query and every alert expression is evaluated through Prometheus' HTTP
API; the scrape passes `promtool check metrics`; no phone number reaches /metrics or the log.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.core.policy import load_policy
from processors.core.timeutil import format_rfc3339
from processors.tools.client import GateChecks
from tests.e2e.conftest import Gate, free_port, http_json, poll, start_worker, stop_worker
from tests.factories import inbound, message, preference, status, template_entry

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/rules/outbound-gate.rules.yml"
DASHBOARD = REPO / "deploy/grafana/dashboards/outbound-gate.json"
TENANT_CAP = 4
API_TOKEN = "observability-token"
TENANTS = [f"tenant-{i}" for i in range(7)]  # three past the cap
US, CA, BR_LIMITED = "12025550143", "14165550123", "5511987654321"
US_BSUID, BR_PARENT_BSUID = "US.13491208655302741918", "BR.ENT.11815799212886844830"
# Business-scoped user IDs are personal data like numbers: the scans below look for both.
RECIPIENTS = [US, CA, BR_LIMITED, "447400123456", "5511912345678", "919812345678", US_BSUID,
              BR_PARENT_BSUID]
BSUID_LIKE = re.compile(r"\b[A-Z]{2}\.(?:ENT\.)?[0-9A-Za-z]{8,}")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: install Debian's prometheus package "
                    "(apt-get install prometheus), as .ci/run does")
    return path


def traffic(gate: Gate) -> int:
    """A realistic burst: catalog, statuses, messages over several tenants, bad input."""
    now = time.time()
    stamp = format_rfc3339(now - 1)
    for tenant in TENANTS:
        gate.send(gate.topics.templates, f"{tenant}:promo:en_US",
                  template_entry("promo", "MARKETING", "APPROVED", stamp, tenant))
        gate.send(gate.topics.templates, f"{tenant}:notice:en_US",
                  template_entry("notice", "UTILITY", "APPROVED", stamp, tenant))
    gate.send(gate.topics.statuses, BR_LIMITED, status(BR_LIMITED, 131049, stamp, TENANTS[0]))
    # A BSUID-only opt-out, and an inbound message that links a number and a BSUID.
    gate.send(gate.topics.preferences, US_BSUID, preference(US_BSUID, "stop", stamp, TENANTS[1]))
    gate.send(gate.topics.inbound, CA, {**inbound(CA, stamp, TENANTS[1]),
                                         "parent_user_id": BR_PARENT_BSUID})
    sent = 0
    for round_ in range(5):
        for index, tenant in enumerate(TENANTS):
            for recipient in RECIPIENTS:
                template = "promo" if (round_ + index) % 3 else "notice"
                doc = message(message_id=f"obs-{uuid.uuid4().hex[:10]}", tenant_id=tenant,
                              recipient=recipient, created_at=format_rfc3339(time.time()),
                              template={"name": template, "language": "en_US"},
                              origin="bulk" if round_ == 4 and index == 1 else "api")
                gate.send(gate.topics.outbound, recipient, doc)
                sent += 1
    for raw in (b"{broken", b"[]", b"\xff\xfe"):
        gate.send_raw(gate.topics.outbound, b"bad", raw)
    return sent


@pytest.fixture(scope="module")
def observed(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Gate, str]]:
    prometheus = need("prometheus")
    tmp = tmp_path_factory.mktemp("observability")
    # One tenant has the US pause in monitor mode, so the monitor panel has data too; one
    # has a messaging limit of two new users a day, so the messaging-limit row has data.
    policy = json.loads(json.dumps(dict(load_policy().document)))
    policy["tenants"] = {TENANTS[2]: {"rules": {"MARKETING_PAUSED_US": {"mode": "monitor"}}},
                         TENANTS[3]: {"parameters": {"messaging_limit": 2}}}
    (tmp / "policy.json").write_text(json.dumps(policy))
    gate = start_worker(bootstrap, tmp, uuid.uuid4().hex[:10],
                        {"OUTBOUND_GATE_TENANT_LABEL_CAP": str(TENANT_CAP),
                         "OUTBOUND_GATE_POLICY_FILE": str(tmp / "policy.json"),
                         "OUTBOUND_GATE_API_TOKEN": API_TOKEN})
    reader = gate.reader()
    sent = traffic(gate)
    reader.wait_for(lambda outs: sum(o.topic != gate.topics.dlq for o in outs) >= sent
                    and sum(o.topic == gate.topics.dlq for o in outs) >= 3, 120,
                    f"{sent} decisions and 3 dead letters")
    reader.close()
    # Help-desk questions, so the check API row has data.
    checks = GateChecks(gate.base_url, API_TOKEN)
    for recipient in RECIPIENTS[:3]:
        checks.check(message(message_id=f"ask-{uuid.uuid4().hex[:8]}", tenant_id=TENANTS[0],
                             recipient=recipient, created_at=format_rfc3339(time.time())))
        checks.recipient(TENANTS[0], "+" + recipient)
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "outbound-gate", "static_configs": [
            {"targets": [gate.base_url.removeprefix("http://")]}]}],
    }))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"

    def scraped_twice() -> bool:
        try:
            return bool(query(api, "count_over_time(outbound_gate_decisions_total[1m]) >= 2"))
        except OSError:
            return False

    poll(scraped_twice, 60, "Prometheus to scrape the worker at least twice",
         lambda: None if process.poll() is None else f"prometheus exited: {tmp}/prometheus.log")
    yield gate, api
    process.terminate()
    process.wait(timeout=30)
    log.close()
    assert stop_worker(gate) == 0


def query(api: str, expr: str) -> list[Any]:
    url = f"{api}/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[Any] = body["data"]["result"]
    return result


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$tenant", ".*")


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"]
            for rule in group["rules"]]


def test_every_panel_query_evaluates_and_shows_data(observed: tuple[Gate, str]) -> None:
    _, api = observed
    empty = []
    for title, expr in panel_queries():
        result = query(api, grafana_to_promql(expr))
        if not result:
            empty.append(title)
    assert not empty, f"panels without data after the burst: {empty}"


def test_every_alert_expression_evaluates(observed: tuple[Gate, str]) -> None:
    _, api = observed
    for _, expr in alert_expressions():
        query(api, expr)  # success, whatever it returns
    poll(lambda: all(r.get("health") == "ok" for g in http_json(f"{api}/rules")[1]["data"]
                     ["groups"] for r in g["rules"]) and bool(http_json(f"{api}/rules")[1]
                     ["data"]["groups"]), 30, "every rule evaluated with health ok")


def test_queries_use_only_metrics_the_worker_exposes(observed: tuple[Gate, str]) -> None:
    gate, _ = observed
    with urllib.request.urlopen(f"{gate.base_url}/metrics", timeout=10) as response:
        scrape = response.read().decode()
    names = {"up"} | set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", scrape, re.MULTILINE))
    for source, expr in panel_queries() + alert_expressions():
        for metric in re.findall(r"\b((?:outbound_gate|faust)_[a-z_]+)\b", expr):
            assert metric in names, f"{source} uses {metric}, which the worker does not expose"


def test_scrape_passes_promtool_and_holds_no_phone_number(observed: tuple[Gate, str]) -> None:
    gate, _ = observed
    with urllib.request.urlopen(f"{gate.base_url}/metrics", timeout=10) as response:
        scrape = response.read()
    result = subprocess.run([need("promtool"), "check", "metrics"], input=scrape,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    text = scrape.decode()
    for number in RECIPIENTS:
        assert number not in text, "a phone number or BSUID reached /metrics"
    assert not re.search(r"\+\d{7,15}", text), "something like an E.164 number in /metrics"
    assert not BSUID_LIKE.search(text), "something like a BSUID in /metrics"


def test_tenant_labels_are_capped(observed: tuple[Gate, str]) -> None:
    _, api = observed
    tenants = {r["metric"]["tenant"] for r in query(api, "outbound_gate_decisions_total")}
    assert "__other__" in tenants
    assert len(tenants - {"__other__"}) == TENANT_CAP
    folded = query(api, "outbound_gate_tenants_folded_total")
    assert float(folded[0]["value"][1]) == len(TENANTS) - TENANT_CAP


def test_worker_log_is_json_lines_without_numbers(observed: tuple[Gate, str]) -> None:
    gate, _ = observed
    lines = [line for line in gate.log().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    kinds = {event.get("event") for event in events}
    assert {"start", "assignment", "dead_letter"} <= kinds, kinds
    letter = next(e for e in events if e.get("event") == "dead_letter")
    assert {"reason", "topic", "partition", "offset"} <= set(letter)
    text = gate.log()
    for number in RECIPIENTS:
        assert number not in text, "a phone number or BSUID reached the worker's log"
    assert not BSUID_LIKE.search(text), "something like a BSUID in the worker's log"
