#!/usr/bin/env bash
# Deploy checks, offline (`make check-deploy`): lint the chart, render it in the configurations
# that matter, validate every manifest against Kubernetes' own schemas, check and unit-test the
# alert rules with promtool, lint both Dockerfiles, then run tests/deploy. No cluster and no
# Docker engine needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash deploy/tools.sh >/dev/null
bash scripts/install_promtool.sh >/dev/null  # Debian's prometheus package; no-op when present

HELM="$ROOT/.tools/bin/helm"
BIN="$ROOT/.venv/bin"
CHART=deploy/helm/facellm
# Oldest supported (Chart.yaml kubeVersion) and newest the validator knows.
KUBE_VERSIONS=(1.25.0 1.37.0)

PROMTOOL="$(command -v promtool)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== %s\n' "$*"; }

render_and_validate() {
    local name="$1"
    shift
    step "helm template ($name) | kubernetes-validate --strict"
    local out
    out="$(mktemp)"
    "$HELM" template facellm "$CHART" --namespace facellm "$@" >"$out"
    for version in "${KUBE_VERSIONS[@]}"; do
        # CRDs (ScaledObject, ServiceMonitor, PrometheusRule) have no schema here: they warn,
        # never fail.
        "$BIN/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$out"
    done
    rm -f "$out"
}

step "helm lint --strict"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" --set model.preset=38B --set model.gpusPerNode=8 \
    --set autoscaling.mode=keda --set ingress.enabled=true
"$HELM" lint --strict "$CHART" --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true \
    --set networkPolicy.enabled=true --set serviceMonitor.enabled=true

render_and_validate "defaults"
render_and_validate "38B, TP 4 on 8-GPU nodes" \
    --set model.preset=38B --set model.tensorParallelSize=4 --set model.gpusPerNode=8
render_and_validate "8B, KEDA" --set model.preset=8B --set autoscaling.mode=keda
render_and_validate "8B, HPA + ServiceMonitor" \
    --set model.preset=8B --set autoscaling.mode=hpa --set serviceMonitor.enabled=true
render_and_validate "1B, ingress, auth, PVC, hub token" \
    --set model.preset=1B --set ingress.enabled=true --set auth.enabled=true \
    --set 'auth.keys={change-me}' --set modelCache.persistence.enabled=true \
    --set huggingface.tokenSecret.name=hf-token
render_and_validate "8B, engine args, LoRA adapters in the cache, runtime LoRA" \
    --set model.preset=8B --set modelCache.persistence.enabled=true \
    --set server.engineArgs.enable_prefix_caching=true \
    --set server.engineArgs.max_num_batched_tokens=8192 \
    --set server.loraAdapters.support=/models/adapters/support \
    --set server.maxLoraRank=64 --set server.runtimeLora.enabled=true \
    --set server.apiProcesses=1 \
    --set server.runtimeLora.adminKey=change-me --set auth.enabled=true \
    --set 'auth.keys={change-me-too}'
render_and_validate "8B by digest, pinned revision, NetworkPolicy, dashboard, rules, metrics key" \
    --set model.preset=8B --set image.digest="sha256:$(printf '0%.0s' {1..64})" \
    --set model.revision=0123456789abcdef0123456789abcdef01234567 \
    --set networkPolicy.enabled=true \
    --set 'networkPolicy.ingress.from[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=ingress-nginx' \
    --set 'networkPolicy.ingress.from[0].podSelector.matchLabels.app\.kubernetes\.io/name=ingress-nginx' \
    --set 'networkPolicy.ingress.from[1].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring' \
    --set grafanaDashboard.enabled=true --set grafanaDashboard.namespace=monitoring \
    --set prometheusRule.enabled=true --set prometheusRule.labels.release=kube-prometheus-stack \
    --set serviceMonitor.enabled=true --set metricsAuth.existingSecret=facellm-metrics \
    --set autoscaling.mode=hpa
render_and_validate "offline: NetworkPolicy without hub egress, nothing admitted, KEDA rules" \
    --set model.preset=1B --set server.allowDownload=false --set networkPolicy.enabled=true \
    --set networkPolicy.ingress.sameNamespace=false --set prometheusRule.enabled=true \
    --set autoscaling.mode=keda --set modelCache.persistence.enabled=true
render_and_validate "Batch API on SQLite, a claim" --set batch.enabled=true
render_and_validate "Batch API on PostgreSQL, 3 replicas" --set batch.enabled=true \
    --set batch.database.existingSecret=facellm-batch-db --set replicaCount=3

# The alert rules as the chart ships them: the PrometheusRule's spec, rendered from
# rules/facellm-alerts.yaml with the given values, as a plain Prometheus rules file in $1.
render_rules() {
    local out="$1"
    shift
    "$HELM" template facellm "$CHART" --namespace facellm --set prometheusRule.enabled=true \
        --show-only templates/prometheusrule.yaml "$@" |
        "$BIN/python" -c 'import sys, yaml
yaml.safe_dump(yaml.safe_load(sys.stdin)["spec"], sys.stdout, sort_keys=False, width=1000)' >"$out"
}

check_rules() {
    local name="$1"
    shift
    step "promtool check rules ($name)"
    render_rules "$WORK/check.rules.yaml" "$@"
    "$PROMTOOL" check rules "$WORK/check.rules.yaml"
}

check_rules "autoscaling off"
check_rules "HPA" --set autoscaling.mode=hpa
check_rules "KEDA, own thresholds and selector" --set autoscaling.mode=keda \
    --set-json prometheusRule.ttft.sloSeconds=0.75 --set-json prometheusRule.errorRatio.threshold=0.01 \
    --set 'prometheusRule.selector=namespace="facellm"\, job="facellm"'

step "promtool test rules deploy/promtool/alerts.test.yaml (every alert: firing and quiet)"
# The render the test file states in its header (tests/deploy/observability.py: RULES_TEST_VALUES).
mkdir "$WORK/unit"
render_rules "$WORK/unit/facellm-alerts.rules.yaml" --set autoscaling.mode=hpa \
    --set prometheusRule.alertLabels.team=serving
cp deploy/promtool/alerts.test.yaml "$WORK/unit/"
(cd "$WORK/unit" && "$PROMTOOL" test rules alerts.test.yaml)

step "hadolint"
"$BIN/hadolint" Dockerfile Dockerfile.cpu

step "pytest tests/deploy"
"$BIN/pytest" tests/deploy -q
