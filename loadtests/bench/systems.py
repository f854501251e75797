"""How each of the four systems starts: one command builder per system, all on the same
`EngineFlags` (loadtests/bench/engine_flags.py) and the same environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from loadtests.bench.engine_flags import ENGINE_ENV, SERVED_MODEL_NAME
from loadtests.bench.plan import Bench
from loadtests.bench.processes import ROOT

# (argv, env, readiness path) of an HTTP system on a port.
ServerCommand = tuple[list[str], dict[str, str], str]


def system_env() -> dict[str, str]:
    """Every system gets this environment (the engine's CPU settings included)."""
    return {**os.environ, **ENGINE_ENV, "PYTHONPATH": str(ROOT)}


def facellm_command(bench: Bench, port: int) -> ServerCommand:
    """This server, configured through its environment."""
    env = system_env() | bench.engine.facellm_env()
    env |= {
        "FACELLM_MODEL": str(bench.model_dir),
        "FACELLM_SERVED_MODEL_NAME": SERVED_MODEL_NAME,
        "FACELLM_PORT": str(port),
        "FACELLM_API_PROCESSES": str(bench.api_processes),
    }
    return [sys.executable, "-m", "server"], env, "/ready"


def floor_command(bench: Bench, port: int) -> ServerCommand:
    """The HTTP floor (loadtests/bench/floor.py)."""
    cmd = [
        *(sys.executable, "-m", "loadtests.bench.floor", "--model-dir", str(bench.model_dir)),
        *("--port", str(port), *bench.engine.in_process_args()),
    ]
    return cmd, system_env(), "/health"


def vllm_command(bench: Bench, port: int) -> ServerCommand:
    """vLLM's own OpenAI server."""
    cmd = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(bench.model_dir), "--served-model-name", SERVED_MODEL_NAME),
        *("--host", "127.0.0.1", "--port", str(port), *bench.engine.vllm_args()),
        *("--generation-config", "vllm"),  # sampling from the request alone, as in ours
        *("--api-server-count", str(bench.api_processes)),
    ]
    return cmd, system_env(), "/health"


SERVERS: dict[str, Callable[[Bench, int], ServerCommand]] = {
    "facellm": facellm_command,
    "floor": floor_command,
    "vllm": vllm_command,
}


def server_command(system: str, bench: Bench, port: int) -> ServerCommand:
    """(argv, env, readiness path) of an HTTP system with the shared engine settings."""
    return SERVERS[system](bench, port)


def engine_command(bench: Bench, image_offset: int, out: Path) -> list[str]:
    """The engine-only ceiling (loadtests/bench/engine.py): it runs the points itself and writes
    its results to `out`."""
    spec = ",".join(f"{p.concurrency}:{p.requests}:{p.first_image}" for p in bench.points)
    return [
        *(sys.executable, "-m", "loadtests.bench.engine", "--model-dir", str(bench.model_dir)),
        *("--points", spec, "--image-size", str(bench.image_size)),
        *("--image-offset", str(image_offset), "--warmup", str(bench.warmup)),
        *("--max-tokens", str(bench.max_tokens), *bench.engine.in_process_args()),
        *("--out", str(out), *bench.noise_args()),
    ]
