"""Both Dockerfiles lint clean and keep the properties the chart and operators rely on."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            pairs.append((keyword.upper(), args.strip()))
    return pairs


def args_of(name: str, keyword: str) -> list[str]:
    return [args for kw, args in instructions(name) if kw == keyword]


def extra_pins(extra: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = (req.split("==") for req in project["optional-dependencies"][extra])
    return {name: version for name, version in pins}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(hadolint_bin: Path, name: str) -> None:
    proc = subprocess.run(
        [str(hadolint_bin), "--no-color", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_contract(name: str) -> None:
    assert args_of(name, "USER") == ["1000:1000"]
    assert [json.loads(a) for a in args_of(name, "ENTRYPOINT")] == [["facellm-server"]]
    assert args_of(name, "EXPOSE") == ["8000"]
    (healthcheck,) = args_of(name, "HEALTHCHECK")
    assert "/health" in healthcheck
    assert [json.loads(a) for a in args_of(name, "VOLUME")] == [["/models"]]
    env = " ".join(args_of(name, "ENV"))
    assert "FACELLM_HOST=0.0.0.0" in env
    assert "HF_HOME=/models/" in env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_layer_comes_before_the_source(name: str) -> None:
    steps = instructions(name)
    copies = [i for i, (kw, _) in enumerate(steps) if kw == "COPY"]
    assert [steps[i][1] for i in copies] == ["pyproject.toml ./", ". ."]
    deps_installs = [
        args for kw, args in steps[copies[0] : copies[1]] if kw == "RUN" and "pip install" in args
    ]
    assert deps_installs
    assert all("--mount=type=cache,target=/root/.cache/pip" in a for a in deps_installs)


def test_gpu_base_image_matches_the_pinned_vllm() -> None:
    (base,) = args_of("Dockerfile", "FROM")
    assert base == f"vllm/vllm-openai:v{extra_pins('gpu')['vllm']}"


def test_cpu_image_installs_the_pinned_torch_from_the_cpu_index() -> None:
    pins = extra_pins("cpu")
    install = " ".join(args_of("Dockerfile.cpu", "RUN"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert f'"torch=={pins["torch"]}+cpu"' in install
    assert f'"torchvision=={pins["torchvision"]}+cpu"' in install
    assert "uninstall -y torchaudio torchcodec triton" in install


def test_dockerignore_admits_only_the_package() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!server/", "!model/"} <= set(lines)
