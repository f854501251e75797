#!/usr/bin/env bash
# Deploy checks, offline (`make check-deploy`): lint the chart, render it in the configurations
# that matter, validate every manifest against Kubernetes' own schemas, lint both Dockerfiles,
# then run tests/deploy. No cluster and no Docker engine needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash deploy/tools.sh >/dev/null

HELM="$ROOT/.tools/bin/helm"
BIN="$ROOT/.venv/bin"
CHART=deploy/helm/facellm
# Oldest supported (Chart.yaml kubeVersion) and newest the validator knows.
KUBE_VERSIONS=(1.25.0 1.37.0)

step() { printf '\n== %s\n' "$*"; }

render_and_validate() {
    local name="$1"
    shift
    step "helm template ($name) | kubernetes-validate --strict"
    local out
    out="$(mktemp)"
    "$HELM" template facellm "$CHART" --namespace facellm "$@" >"$out"
    for version in "${KUBE_VERSIONS[@]}"; do
        # CRDs (ScaledObject, ServiceMonitor) have no schema here: they warn, never fail.
        "$BIN/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$out"
    done
    rm -f "$out"
}

step "helm lint --strict"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" --set model.preset=38B --set model.gpusPerNode=8 \
    --set autoscaling.mode=keda --set ingress.enabled=true

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
    --set server.runtimeLora.adminKey=change-me --set auth.enabled=true \
    --set 'auth.keys={change-me-too}'

step "hadolint"
"$BIN/hadolint" Dockerfile Dockerfile.cpu

step "pytest tests/deploy"
"$BIN/pytest" tests/deploy -q
