"""Generate the Kubernetes copies of the alert rules and the Grafana dashboard.

    python deploy/k8s/generate_monitoring.py          # rewrite the two manifests
    python deploy/k8s/generate_monitoring.py --check  # exit 1 if either differs from its source

prometheusrule.yaml carries deploy/prometheus/rules/outbound-gate.rules.yml (its groups,
comments and all) as a Prometheus Operator PrometheusRule; grafana-dashboard.yaml carries
deploy/grafana/dashboards/outbound-gate.json as a ConfigMap that kube-prometheus-stack's Grafana
sidecar loads. The sources stay the truth (promtool tests the rules, the dashboard has its own
generator): edit them, run this, commit all. tests/unit/test_deploy_manifests.py fails when a
manifest differs from what this writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

K8S = Path(__file__).resolve().parent
DEPLOY = K8S.parent
RULES = DEPLOY / "prometheus" / "rules" / "outbound-gate.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "outbound-gate.json"
PROMETHEUS_RULE = K8S / "prometheusrule.yaml"
DASHBOARD_CONFIGMAP = K8S / "grafana-dashboard.yaml"
DASHBOARD_KEY = DASHBOARD.name

GENERATED = ("# Generated from {source}\n"
             "# by deploy/k8s/generate_monitoring.py: edit that file, not this one.\n")


def indent(text: str, spaces: int) -> str:
    """Every non-empty line indented (an empty line stays empty: no trailing spaces)."""
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def prometheus_rule() -> str:
    text = RULES.read_text(encoding="utf-8")
    # The rules file is {groups: [...]}, which is exactly a PrometheusRule's spec: its text from
    # `groups:` on goes under spec as it is, so that its comments come along.
    start = text.index("\ngroups:") + 1
    return (
        GENERATED.format(source=RULES.relative_to(DEPLOY.parent))
        + """\
# The alert rules for the Prometheus Operator (needs the monitoring.coreos.com CRDs, as
# servicemonitor.yaml). Without the operator, load the rules file itself (rule_files:).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: outbound-gate
  labels:
    app.kubernetes.io/name: outbound-gate
    app.kubernetes.io/component: monitoring
    # Many installs (kube-prometheus-stack) only load PrometheusRules carrying their release
    # label (the Prometheus's ruleSelector); set it to yours, e.g. release: kube-prometheus-stack.
spec:
"""
        + indent(text[start:], 2)
    )


def dashboard_configmap() -> str:
    text = DASHBOARD.read_text(encoding="utf-8")
    return (
        GENERATED.format(source=DASHBOARD.relative_to(DEPLOY.parent))
        + """\
# The Grafana dashboard for kube-prometheus-stack: its Grafana sidecar loads every ConfigMap
# labelled grafana_dashboard: "1" (in Grafana's namespace unless the sidecar's searchNamespace
# says more). The dashboard asks for a Prometheus data source ($datasource).
apiVersion: v1
kind: ConfigMap
metadata:
  name: outbound-gate-dashboard
  labels:
    app.kubernetes.io/name: outbound-gate
    app.kubernetes.io/component: monitoring
    grafana_dashboard: "1"
data:
"""
        + f"  {DASHBOARD_KEY}: |\n"
        + indent(text, 4)
    )


def outputs() -> dict[Path, str]:
    return {PROMETHEUS_RULE: prometheus_rule(), DASHBOARD_CONFIGMAP: dashboard_configmap()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed manifest differs from its source")
    args = parser.parse_args()
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(DEPLOY.parent)}", file=sys.stderr)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python deploy/k8s/generate_monitoring.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
