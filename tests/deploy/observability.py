"""The chart's dashboard and alert rules as data: their PromQL, the metric names in it, and the
series that are not the server's own. Shared by tests/deploy (offline) and tests/e2e (against a
real scrape)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "facellm"
DASHBOARD = CHART / "dashboards" / "facellm.json"
RULES_SOURCE = CHART / "rules" / "facellm-alerts.yaml"
RULES_TEST = ROOT / "deploy" / "promtool" / "alerts.test.yaml"
RULES_FILE_NAME = "facellm-alerts.rules.yaml"  # what RULES_TEST's rule_files names
# The render RULES_TEST is written for (its header says so, and deploy/check.sh uses it too).
RULES_TEST_VALUES = (
    "prometheusRule.enabled=true",
    "autoscaling.mode=hpa",
    "prometheusRule.alertLabels.team=serving",
)

# Series the dashboard and the rules read that the server does not export, by exporter. Named
# exactly: a misspelt kube-state-metrics name would otherwise pass unnoticed.
NOT_THE_SERVERS = {
    "kube-state-metrics": {
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
    },
    "Prometheus (scrape health)": {"up"},
}
OTHER_SERIES = set().union(*NOT_THE_SERVERS.values())

# Grafana's variables, replaced by plain values so the PromQL parses as Prometheus would get it.
_GRAFANA_RANGE = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
_GRAFANA_VAR = re.compile(r"\$\{?(\w+)\}?")

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on"}
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside strings, label matchers, ranges
    and grouping clauses that are not function calls or keywords."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


def as_promql(grafana_expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in: valid PromQL."""
    return _GRAFANA_VAR.sub("x", _GRAFANA_RANGE.sub("5m", grafana_expr))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel but rows, including those inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in (board or dashboard())["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel.get("targets", []) if target.get("expr")]


def dashboard_exprs(board: dict[str, Any] | None = None) -> dict[str, str]:
    """name -> Grafana PromQL for every panel query and every query variable (the selector
    inside label_values(...))."""
    board = board or dashboard()
    exprs: dict[str, str] = {}
    for panel in panels(board):
        for i, expr in enumerate(panel_exprs(panel)):
            exprs[f"panel {panel['title']!r} query {i}"] = expr
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {var['name']}: only label_values(selector, label) is checked"
        exprs[f"variable {var['name']}"] = match.group(1)
    return exprs


def render_rules(helm: Path, *set_args: str) -> dict[str, Any]:
    """The PrometheusRule's spec (a Prometheus rules file) as `helm template` renders it."""
    cmd = [str(helm), "template", "facellm", str(CHART), "--namespace", "facellm"]
    cmd += ["--show-only", "templates/prometheusrule.yaml"]
    for arg in ("prometheusRule.enabled=true", *set_args):
        cmd += ["--set", arg]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    spec: dict[str, Any] = yaml.safe_load(proc.stdout)["spec"]
    return spec


def rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in spec["groups"] for rule in group["rules"]]


def rule_exprs(spec: dict[str, Any]) -> dict[str, str]:
    return {rule.get("alert") or rule["record"]: rule["expr"] for rule in rules(spec)}


def exposed_names(exposition: str) -> set[str]:
    """Sample names in a Prometheus text exposition (`_bucket`, `_total`… as exposed)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
