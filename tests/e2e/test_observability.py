"""The dashboard's and the alert rules' queries name only series a real server exports.

A chat, a face analysis and a face analysis that abstains go through the real server first, so
that histograms, counters and labelled series (abstentions by attribute) have samples; then every
metric name in the chart's dashboard (dashboards/facellm.json) and rendered alert rules
(rules/facellm-alerts.yaml) must be in the scrape of /metrics, except the explicitly listed
kube-state-metrics and Prometheus series, and every label they match or group by must be on
those series or be one the scrape adds (namespace, service, pod...).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.deploy.observability import (
    NOT_THE_SERVERS,
    OTHER_SERIES,
    ROOT,
    dashboard_exprs,
    exposed_names,
    metric_names,
    render_rules,
    rule_exprs,
)
from tests.images import astronaut, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

# Labels Prometheus (ServiceMonitor discovery) puts on every scraped series.
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "endpoint", "container"}
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^()]*)\)")
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s")
_LABEL = re.compile(r'(\w+)="')


def helm_bin() -> Path:
    local = ROOT / ".tools" / "bin" / "helm"
    found = local if local.is_file() else shutil.which("helm")
    if not found:
        message = "helm not found: run `bash deploy/tools.sh` (the rules are a Helm template)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Path(found)


@pytest.fixture(scope="module")
def scraped(real_server: ServerProcess) -> str:
    with httpx.Client(base_url=real_server.base_url, timeout=120) as http:
        chat = {"messages": image_message(data_url(astronaut())), "max_tokens": 8}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        faces = {"image": data_url(astronaut())}
        assert http.post("/v1/faces/analyze", json=faces).status_code == 200
        # Nothing is that sure: every attribute abstains, so abstentions have series.
        abstain = {**faces, "min_confidence": 1.0}
        assert http.post("/v1/faces/analyze", json=abstain).status_code == 200
        return http.get("/metrics").text


@pytest.fixture(scope="module")
def queries() -> dict[str, str]:
    """Every query the chart ships: the dashboard's and the rendered rules' (HPA mode: the one
    with every series)."""
    rules = rule_exprs(render_rules(helm_bin(), "autoscaling.mode=hpa"))
    return {**dashboard_exprs(), **{f"alert {name}": expr for name, expr in rules.items()}}


def labels_by_name(exposition: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found.setdefault(match.group(1), set()).update(_LABEL.findall(match.group(2) or ""))
    return found


def test_queries_name_only_series_the_server_exports(scraped: str, queries: dict[str, str]) -> None:
    exported = exposed_names(scraped)
    used: set[str] = set()
    missing = []
    for where, expr in queries.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric name found in {expr!r}"
        used |= names
        missing += [f"{where}: {name}" for name in sorted(names - exported - OTHER_SERIES)]
    assert not missing, "not in a real scrape:\n" + "\n".join(missing)
    # The allow-list holds what the queries use, no more: a stale entry hides nothing.
    assert used & OTHER_SERIES == OTHER_SERIES, NOT_THE_SERVERS
    assert not exported & OTHER_SERIES  # and none of it is the server's after all


def test_queries_use_labels_the_series_have(scraped: str, queries: dict[str, str]) -> None:
    labels = labels_by_name(scraped)
    wrong = []
    for where, expr in queries.items():
        server_names = metric_names(expr) - OTHER_SERIES
        for name, matchers in _SELECTOR.findall(expr):
            if name in OTHER_SERIES:
                continue
            for label in _MATCHER_LABEL.findall(matchers):
                if label not in labels.get(name, set()) | TARGET_LABELS:
                    wrong.append(f"{where}: {name} has no label {label!r}")
        known = set().union(*(labels.get(n, set()) for n in server_names))
        for group in _GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if server_names and label not in known | TARGET_LABELS:
                    wrong.append(f"{where}: no series in it has label {label!r}")
    assert not wrong, "\n".join(wrong)


def test_scrape_has_samples_for_the_histograms_and_counters(scraped: str) -> None:
    """The requests above went through: the panels would show data, not an empty graph."""
    values = {}
    for line in scraped.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1).endswith(("_count", "_total")):
            values.setdefault(match.group(1), 0.0)
            values[match.group(1)] += float(line.rsplit(" ", 1)[1])
    for name in (
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "facellm_image_decode_seconds_count",
        "facellm_faces_per_image_count",
        "facellm_model_requests_total",
        "facellm_abstentions_total",
    ):
        assert values.get(name, 0) > 0, name
