"""What an operator looks at (issue 16): the Grafana dashboard, the alert rules and their promtool
tests, and the chart's hardening (read-only root, NetworkPolicy, digests, a pinned revision, keys
only from Secrets). tests/e2e/test_observability.py checks the same queries against a real scrape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.observability import (
    DASHBOARD,
    OTHER_SERIES,
    RULES_FILE_NAME,
    RULES_TEST,
    RULES_TEST_VALUES,
    as_promql,
    dashboard,
    dashboard_exprs,
    metric_names,
    panel_exprs,
    panels,
    render_rules,
    rule_exprs,
    rules,
)

pytestmark = pytest.mark.deploy

Manifests = dict[str, dict[str, Any]]
Render = Callable[..., Manifests]
RenderDocs = Callable[..., list[dict[str, Any]]]
ALERTS = {
    "FacellmHighErrorRatio",
    "FacellmTimeToFirstTokenSLO",
    "FacellmBacklogAtMaxReplicas",
    "FacellmNoReadyReplica",
    "FacellmAnswerValidationFailures",
}
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def container(manifests: Manifests) -> dict[str, Any]:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def volumes(manifests: Manifests) -> dict[str, dict[str, Any]]:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    return {v["name"]: v for v in pod["volumes"]}


def env(manifests: Manifests) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(manifests).get("env", [])}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# --- the dashboard ----------------------------------------------------------------------------

# One bullet of the issue each: the metric names (all of them) some one panel must query, and
# text its queries must contain.
BULLETS = {
    "request rate by route and status": ({"facellm_http_requests_total"}, "by (route, status)"),
    "requests per model and adapter": ({"facellm_model_requests_total"}, "by (model"),
    "TTFT p50 and p95": (
        {"vllm:time_to_first_token_seconds_bucket"},
        "histogram_quantile(0.5,|histogram_quantile(0.95,|model_name",
    ),
    "end-to-end p50 and p95": (
        {"vllm:e2e_request_latency_seconds_bucket"},
        "histogram_quantile(0.5,|histogram_quantile(0.95,|model_name",
    ),
    "backlog": ({"facellm_backlog_requests"}, "by (pod)"),
    "admission rejections": ({"facellm_admission_rejections_total"}, "rate("),
    "engine running and waiting": (
        {"vllm:num_requests_running", "vllm:num_requests_waiting"},
        "model_name",
    ),
    "KV-cache usage": ({"vllm:kv_cache_usage_perc"}, "by (pod)"),
    "image decode time": (
        {"facellm_image_decode_seconds_bucket"},
        "histogram_quantile(0.5,|histogram_quantile(0.95,",
    ),
    "faces per image": ({"facellm_faces_per_image_sum", "facellm_faces_per_image_count"}, ""),
    "validation failures": ({"facellm_answer_validation_failures_total"}, "rate("),
    "abstentions": ({"facellm_abstentions_total"}, "by (attribute)"),
}


@pytest.mark.parametrize("bullet", list(BULLETS))
def test_dashboard_has_a_panel_for_each_bullet(bullet: str) -> None:
    names, texts = BULLETS[bullet]
    matching = []
    for panel in panels():
        exprs = panel_exprs(panel)
        used = set().union(*(metric_names(e) for e in exprs)) if exprs else set()
        joined = "\n".join(exprs)
        if names <= used and all(t in joined for t in texts.split("|") if t):
            matching.append(panel["title"])
    assert matching, f"no panel shows {bullet}"


def test_dashboard_json_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())  # parses
    assert board["uid"] == "facellm-serve"
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"namespace", "service", "model"} <= variables.keys()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["title"] and panel.get("description"), panel.get("title")
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel_exprs(panel), f"{panel['title']} has no query"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_every_dashboard_query_is_scoped_to_the_selected_release() -> None:
    """Queries of the server's series carry the namespace and service variables (several
    releases share one Prometheus); kube-state-metrics' carry namespace and the object name."""
    for name, expr in dashboard_exprs().items():
        if name.startswith("variable"):
            continue
        assert 'namespace="$namespace"' in expr, name
        if metric_names(expr) & OTHER_SERIES and "up" not in metric_names(expr):
            assert '="$service"' in expr, name
        else:
            assert 'service="$service"' in expr, name
        assert "__name__" not in expr, name  # names must be visible to the checks


def promtool_check(promtool: Path, rules_file: Path) -> None:
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_dashboard_query_parses(promtool_bin: Path, tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule's expression."""
    exprs = dashboard_exprs()
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
            for i, expr in enumerate(exprs.values())
        ],
    }
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    promtool_check(promtool_bin, path)


# --- the alert rules --------------------------------------------------------------------------

RULE_RENDERS = [
    pytest.param((), id="autoscaling-off"),
    pytest.param(("autoscaling.mode=hpa",), id="hpa"),
    pytest.param(("autoscaling.mode=keda", "prometheusRule.alertLabels.team=x"), id="keda"),
]


@pytest.mark.parametrize("values", RULE_RENDERS)
def test_rules_parse(
    helm_bin: Path, promtool_bin: Path, tmp_path: Path, values: tuple[str, ...]
) -> None:
    spec = render_rules(helm_bin, *values)
    assert {rule["alert"] for rule in rules(spec)} == ALERTS
    path = tmp_path / RULES_FILE_NAME
    path.write_text(yaml.safe_dump(spec))
    promtool_check(promtool_bin, path)


def test_promtool_unit_tests_pass(helm_bin: Path, promtool_bin: Path, tmp_path: Path) -> None:
    (tmp_path / RULES_FILE_NAME).write_text(
        yaml.safe_dump(render_rules(helm_bin, *RULES_TEST_VALUES))
    )
    shutil.copy(RULES_TEST, tmp_path)
    proc = subprocess.run(
        [str(promtool_bin), "test", "rules", RULES_TEST.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """A firing case: some evaluation expects the alert. A quiet case: a test group whose
    evaluations of the alert all expect nothing (not merely 'still pending')."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        by_alert: dict[str, list[bool]] = {}
        for case in group["alert_rule_test"]:
            by_alert.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
        for alert, fired in by_alert.items():
            (firing if any(fired) else quiet).add(alert)
    assert firing == ALERTS
    assert quiet == ALERTS


def test_rules_select_this_release(helm_bin: Path) -> None:
    exprs = rule_exprs(render_rules(helm_bin, "autoscaling.mode=keda"))
    for alert, expr in exprs.items():
        ours = metric_names(expr) - OTHER_SERIES
        if ours:
            assert 'namespace="facellm", service="facellm"' in expr, alert
        if metric_names(expr) & OTHER_SERIES:
            assert 'namespace="facellm"' in expr, alert
    backlog = exprs["FacellmBacklogAtMaxReplicas"]
    assert 'horizontalpodautoscaler="facellm"' in backlog
    assert "> 4" in backlog  # autoscaling.targetBacklogPerReplica
    assert 'deployment="facellm"' in exprs["FacellmNoReadyReplica"]


def test_rule_thresholds_come_from_values(helm_bin: Path) -> None:
    spec = render_rules(
        helm_bin,
        "prometheusRule.ttft.for=3m",
        "autoscaling.targetBacklogPerReplica=7",
        "prometheusRule.alertLabels.team=serving",
    )
    by_name = {rule["alert"]: rule for rule in rules(spec)}
    assert by_name["FacellmTimeToFirstTokenSLO"]["for"] == "3m"
    assert by_name["FacellmTimeToFirstTokenSLO"]["expr"].rstrip().endswith("> 2")
    assert "> 7" in by_name["FacellmBacklogAtMaxReplicas"]["expr"]
    assert all(rule["labels"]["team"] == "serving" for rule in by_name.values())
    assert {rule["labels"]["severity"] for rule in by_name.values()} == {"critical", "warning"}
    # Without an autoscaler the fixed replicas are the maximum: no HPA series to wait for.
    fixed = rule_exprs(render_rules(helm_bin))["FacellmBacklogAtMaxReplicas"]
    assert "kube_horizontalpodautoscaler" not in fixed


def test_keda_names_its_hpa_as_the_rules_expect(render: Render) -> None:
    manifests = render("autoscaling.mode=keda")
    hpa = manifests["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa["name"] == manifests["Deployment"]["metadata"]["name"]


def test_prometheus_rule_and_dashboard_are_optional_and_labelled(render_docs: RenderDocs) -> None:
    defaults = render_docs()
    assert not of_kind(defaults, "PrometheusRule")
    assert len(of_kind(defaults, "ConfigMap")) == 1  # settings only
    docs = render_docs(
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.annotations.grafana_folder=FaceLLM",
    )
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (board,) = [c for c in of_kind(docs, "ConfigMap") if "facellm.json" in c["data"]]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "FaceLLM"}
    assert board["metadata"]["namespace"] == "ns"
    assert json.loads(board["data"]["facellm.json"]) == dashboard()  # shipped unchanged
    elsewhere = render_docs(
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.labels.grafana_dashboard=facellm",
    )
    (board,) = [c for c in of_kind(elsewhere, "ConfigMap") if "facellm.json" in c["data"]]
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "facellm"


# --- hardening --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [(), ("model.preset=8B",), ("model.preset=38B", "model.gpusPerNode=2")]
)
def test_root_filesystem_is_read_only_with_writable_scratch(
    render: Render, values: tuple[str, ...]
) -> None:
    manifests = render(*values)
    c = container(manifests)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    home = env(manifests)["HOME"]["value"]
    vols = volumes(manifests)
    for path in ("/tmp", home):
        assert "emptyDir" in vols[mounts[path]], path
        assert vols[mounts[path]]["emptyDir"]["sizeLimit"]
    # Everything else the server, vLLM and HF write goes to the model cache volume.
    assert mounts["/models"] == "model-cache"
    e = env(manifests)
    for name in ("HF_HOME", "VLLM_CACHE_ROOT"):
        assert e[name]["value"].startswith("/models/")
    assert manifests["ConfigMap"]["data"]["FACELLM_MODEL_CACHE_DIR"].startswith("/models/")
    assert e["VLLM_NO_USAGE_STATS"]["value"] == "1"


def test_image_by_digest_overrides_the_tag(render: Render) -> None:
    assert container(render())["image"] == "facellm-serve:0.1.0-cpu"
    pinned = render(f"image.digest={DIGEST}", "image.tag=moved", "image.repository=r.io/f")
    assert container(pinned)["image"] == f"r.io/f@{DIGEST}"


def test_model_revision_pins_hub_downloads(render: Render) -> None:
    assert "FACELLM_MODEL_REVISION" not in render()["ConfigMap"]["data"]
    data = render("model.preset=8B", f"model.revision={COMMIT}")["ConfigMap"]["data"]
    assert data["FACELLM_MODEL_REVISION"] == COMMIT


def test_no_network_policy_by_default(render: Render) -> None:
    assert "NetworkPolicy" not in render()


def egress_ports(policy: dict[str, Any]) -> list[set[int]]:
    return [{p["port"] for p in rule.get("ports", [])} for rule in policy["spec"]["egress"]]


def test_network_policy_admits_the_namespace_and_listed_peers(render: Render) -> None:
    manifests = render(
        "networkPolicy.enabled=true",
        "networkPolicy.ingress.from[0].namespaceSelector.matchLabels.name=ingress-nginx",
    )
    policy = manifests["NetworkPolicy"]["spec"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}},
    ]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_network_policy_with_no_peer_admits_nobody(render: Render) -> None:
    """An ingress rule without `from` would admit every source: there must be none at all."""
    policy = render("networkPolicy.enabled=true", "networkPolicy.ingress.sameNamespace=false")
    assert policy["NetworkPolicy"]["spec"]["ingress"] == []


def test_network_policy_egress_dns_always_hub_only_with_downloads(render: Render) -> None:
    online = render("networkPolicy.enabled=true", "model.preset=8B")["NetworkPolicy"]
    assert egress_ports(online) == [{53}, {443}]
    (dns, hub) = online["spec"]["egress"]
    assert dns["to"] and all(peer for peer in dns["to"])
    assert {p["protocol"] for p in dns["ports"]} == {"UDP", "TCP"}
    (block,) = hub["to"]
    assert "10.0.0.0/8" in block["ipBlock"]["except"]  # the hub is public: no in-cluster hosts
    offline = render("networkPolicy.enabled=true", "model.preset=8B", "server.allowDownload=false")
    assert egress_ports(offline["NetworkPolicy"]) == [{53}]


def test_metrics_key_comes_from_a_secret_and_the_service_monitor_sends_it(
    render: Render,
) -> None:
    assert "FACELLM_METRICS_API_KEY" not in env(render())
    manifests = render("metricsAuth.existingSecret=metrics", "serviceMonitor.enabled=true")
    ref = env(manifests)["FACELLM_METRICS_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "metrics", "key": "metrics-api-key"}
    (endpoint,) = manifests["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == ref
    assert "FACELLM_METRICS_API_KEY" not in manifests["ConfigMap"]["data"]


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (("server.extraSettings.FACELLM_API_KEYS=k",), "FACELLM_API_KEYS"),
        (("server.extraSettings.FACELLM_METRICS_API_KEY=k",), "FACELLM_METRICS_API_KEY"),
        (("server.extraSettings.FACELLM_ADMIN_API_KEY=k",), "FACELLM_ADMIN_API_KEY"),
        (("extraEnv[0].name=FACELLM_API_KEYS", "extraEnv[0].value=k"), "extraEnv"),
        (("extraEnv[0].name=FACELLM_METRICS_API_KEY", "extraEnv[0].value=k"), "extraEnv"),
        (("extraEnv[0].name=HF_TOKEN", "extraEnv[0].value=hf_x"), "extraEnv"),
        (
            (
                "extraEnv[0].name=FACELLM_ADMIN_API_KEY",
                "extraEnv[0].valueFrom.configMapKeyRef.name=cm",
                "extraEnv[0].valueFrom.configMapKeyRef.key=k",
            ),
            "extraEnv",
        ),
        (("image.digest=latest",), "digest"),
        (("image.digest=sha256:abc",), "digest"),
        (("model.revision=has space",), "revision"),
        (("prometheusRule.alertLabels.severity=page",), "severity"),
        (("prometheusRule.ttft.for=ten minutes",), "for"),
        (("networkPolicy.egress.dns={}",), "dns"),
        (("networkPolicy.egress.dns=null",), "dns"),
    ],
)
def test_schema_refuses_keys_outside_secrets_and_bad_pins(
    render_error: Callable[..., str], values: tuple[str, ...], why: str
) -> None:
    error = render_error(*values)
    assert "schema" in error
    assert why in error


def test_keys_from_secrets_and_other_settings_still_pass(render: Render) -> None:
    manifests = render(
        "extraEnv[0].name=FACELLM_API_KEYS",
        "extraEnv[0].valueFrom.secretKeyRef.name=keys",
        "extraEnv[0].valueFrom.secretKeyRef.key=json",
        "extraEnv[1].name=FACELLM_LOG_LEVEL",
        "extraEnv[1].value=debug",
        "server.extraSettings.FACELLM_API_KEYS_FILE=/etc/keys",  # a path, not a key
        "server.extraSettings.FACELLM_ENFORCE_EAGER=true",
    )
    assert env(manifests)["FACELLM_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "keys"
    assert manifests["ConfigMap"]["data"]["FACELLM_API_KEYS_FILE"] == "/etc/keys"


def test_dashboard_and_rule_files_are_in_the_chart() -> None:
    """Both are read with .Files.Get: they must not be .helmignored away."""
    helmignore = DASHBOARD.parents[1] / ".helmignore"
    ignored = helmignore.read_text() if helmignore.exists() else ""
    assert "dashboards" not in ignored and "rules" not in ignored
    assert Path(DASHBOARD).is_file()
