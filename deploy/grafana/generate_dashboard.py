"""Generate the Grafana dashboard for outbound-gate (dashboards/outbound-gate.json).

    python deploy/grafana/generate_dashboard.py          # rewrite the JSON
    python deploy/grafana/generate_dashboard.py --check  # exit 1 if the committed JSON differs

The JSON is committed; a test runs --check so that the two never drift apart, and runs every
panel query against a real Prometheus scraping a real worker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "outbound-gate.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
T = 'tenant=~"$tenant"'
RATE = "$__rate_interval"
LAG = "outbound_gate_input_lag"


def q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "datasource": DS}


# (title, kind, unit, width, targets, description)
PANELS: list[tuple[str, str, str, int, list[dict[str, Any]], str]] = [
    ("Decisions per second by outcome", "timeseries", "ops", 12,
     [q(f'sum by (outcome) (rate(outbound_gate_decisions_total{{{T}}}[{RATE}]))',
        "{{outcome}}")],
     "Accepted and rejected messages per second for the selected tenants."),
    ("Rejections by error code", "timeseries", "ops", 12,
     [q(f'sum by (error_code) (rate(outbound_gate_decisions_total{{outcome="rejected", {T}}}'
        f'[{RATE}]))', "{{error_code}}")],
     "Why messages were stopped: the gate's error codes."),
    ("Top tenants by rejections", "bargauge", "ops", 8,
     [q(f'topk(10, sum by (tenant) (rate(outbound_gate_decisions_total{{outcome="rejected"}}'
        f'[{RATE}])))', "{{tenant}}")],
     "Tenants past the label cap are counted as __other__."),
    ("US marketing pause blocks", "timeseries", "ops", 8,
     [q(f'sum(rate(outbound_gate_decisions_total{{error_code="MARKETING_PAUSED_US", {T}}}'
        f'[{RATE}]))', "MARKETING_PAUSED_US")],
     "Marketing templates to US numbers stopped before Meta refused them (131049)."),
    ("Per-user marketing limit blocks", "timeseries", "ops", 8,
     [q(f'sum(rate(outbound_gate_decisions_total{{error_code="USER_MARKETING_TEMPLATE_LIMIT",'
        f' {T}}}[{RATE}]))', "USER_MARKETING_TEMPLATE_LIMIT")],
     "Marketing held back during the cool-down after a 131049 status."),
    ("Dead letters per second by reason", "timeseries", "ops", 8,
     [q(f"sum by (reason) (rate(outbound_gate_dead_letters_total[{RATE}]))", "{{reason}}")],
     "Input the gate could not decode or validate."),
    ("Decision latency p50 / p99", "timeseries", "s", 8,
     [q("histogram_quantile(0.5, sum by (le) (rate("
        f"outbound_gate_decision_latency_seconds_bucket[{RATE}])))", "p50"),
      q("histogram_quantile(0.99, sum by (le) (rate("
        f"outbound_gate_decision_latency_seconds_bucket[{RATE}])))", "p99")],
     "Record consumed to decision produced."),
    ("Route batch time by phase, p99", "timeseries", "s", 8,
     [q("histogram_quantile(0.99, sum by (le, phase) (rate("
        f"outbound_gate_batch_phase_seconds_bucket[{RATE}])))", "{{phase}}")],
     "Where a batch's time goes: process (deciding), produce (waiting for the broker to "
     "acknowledge the outputs), commit (offsets and transaction), store (local state). A "
     "decision waits for the batch before it and its own."),
    ("Event age p50 / p99", "timeseries", "s", 8,
     [q("histogram_quantile(0.5, sum by (le) (rate("
        f"outbound_gate_event_age_seconds_bucket[{RATE}])))", "p50"),
      q("histogram_quantile(0.99, sum by (le) (rate("
        f"outbound_gate_event_age_seconds_bucket[{RATE}])))", "p99")],
     "Message created_at to decision: how late messages are decided."),
    ("Consumer lag by topic", "timeseries", "short", 8,
     [q(f"sum by (topic) ({LAG})", "{{topic}}")],
     "Records of the route processor's input topics not yet processed and committed."),
    ("Rebalances", "timeseries", "short", 8,
     [q("sum(outbound_gate_route_rebalances_total)", "route group"),
      q("sum(faust_total_rebalances)", "catalog group (Faust)"),
      q("sum(faust_total_rebalances_recovering)", "catalog recovering (Faust)")],
     "Consumer-group rebalances seen by the workers: the route processor's group and Faust's."),
    ("Rejections by recipient country", "bargauge", "ops", 8,
     [q("topk(10, sum by (country) (rate(outbound_gate_decisions_by_country_total"
        f'{{outcome="rejected"}}[{RATE}])))', "{{country}}")],
     "All tenants together: country is never combined with the tenant label."),
    ("Monitor-mode would-be rejections", "timeseries", "ops", 8,
     [q(f"sum by (rule) (rate(outbound_gate_monitored_violations_total{{{T}}}[{RATE}]))",
        "{{rule}}")],
     "Rules in monitor mode that fired: what enforcing them would reject."),
    ("Policy in force", "table", "short", 8,
     [q("max by (policy_id, version) (outbound_gate_policy_info)", "{{policy_id}} {{version}}")],
     "Policy id and version each worker decides with."),
    # Meta's messaging limit: new users reached outside the service window in 24 hours.
    ("Messaging limit: slots in use / limit", "timeseries", "percentunit", 12,
     [q(f"max by (tenant) (outbound_gate_messaging_slots_in_use{{{T}}}) / "
        f"max by (tenant) (outbound_gate_messaging_limit{{{T}}})", "{{tenant}}")],
     "Share of each tenant's messaging limit in use (users reached outside the service window "
     "in the last 24 hours); at 100% new conversations get MESSAGING_LIMIT_REACHED. Alert at "
     "80% for 15 minutes."),
    ("Messaging limit refusals", "timeseries", "ops", 12,
     [q(f'sum by (tenant) (rate(outbound_gate_decisions_total{{error_code='
        f'"MESSAGING_LIMIT_REACHED", {T}}}[{RATE}]))', "{{tenant}}")],
     "Sends held back because the tenant had reached its messaging limit (retry when its "
     "oldest slot closes)."),
    # The check API row (POST /v1/check, GET /v1/recipients): help desks ask before sending.
    ("Check API requests by endpoint and status", "timeseries", "reqps", 12,
     [q(f"sum by (endpoint, status) (rate(outbound_gate_api_requests_total[{RATE}]))",
        "{{endpoint}} {{status}}")],
     "Requests per second; 401/400/413 are callers' mistakes, 503 asks them to retry "
     "(partitions moving or restoring)."),
    ("Check API latency p50 / p99 by endpoint", "timeseries", "s", 12,
     [q("histogram_quantile(0.5, sum by (le, endpoint) (rate("
        f"outbound_gate_api_request_seconds_bucket[{RATE}])))", "{{endpoint}} p50"),
      q("histogram_quantile(0.99, sum by (le, endpoint) (rate("
        f"outbound_gate_api_request_seconds_bucket[{RATE}])))", "{{endpoint}} p99")],
     "Request to response on the worker that was asked (a forwarded request includes the "
     "owner's answer)."),
]

def panel(index: int, x: int, y: int, spec: tuple[str, str, str, int, list[dict[str, Any]],
                                                     str]) -> dict[str, Any]:
    title, kind, unit, width, targets, description = spec
    body: dict[str, Any] = {
        "id": index + 1,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }
    if kind == "table":
        body["targets"] = [{**t, "format": "table", "instant": True} for t in body["targets"]]
    return body


def dashboard() -> dict[str, Any]:
    panels, x, y = [], 0, 0
    for index, spec in enumerate(PANELS):
        width = spec[3]
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(index, x, y, spec))
        x += width
    return {
        "uid": "outbound-gate",
        "title": "outbound-gate",
        "description": "WhatsApp messages stopped before Meta would refuse them.",
        "tags": ["outbound-gate", "kafka", "whatsapp"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Data source"},
            {"name": "tenant", "type": "query", "label": "Tenant", "datasource": DS,
             "query": {"query": "label_values(outbound_gate_decisions_total, tenant)",
                       "refId": "tenant"},
             "definition": "label_values(outbound_gate_decisions_total, tenant)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
