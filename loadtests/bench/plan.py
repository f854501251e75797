"""What one benchmark run measures: the systems, the workloads, and the `Bench` plan itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.engine_flags import EngineFlags
from loadtests.bench.faces import FacesPlan
from loadtests.bench.load import Point
from loadtests.bench.photo import PhotoPlan

SYSTEMS = ("engine", "floor", "facellm", "vllm")
WORKLOADS = ("small", "photo", "faces", "batch")
FACES_SYSTEM = "facellm"  # the only one with /v1/faces/analyze
# The batch workload starts a server of ours of its own (loadtests/bench/batch.py).
WORKLOAD_SYSTEMS = {
    "small": SYSTEMS,
    "photo": ("facellm", "vllm"),
    "faces": (FACES_SYSTEM,),
    "batch": (),
}


@dataclass(frozen=True)
class Bench:
    model_dir: Path
    points: list[Point]
    repeats: int
    max_tokens: int
    image_size: int
    stream_interval: int
    warmup: int
    logs: Path
    noise: NoisePolicy  # own_groups is filled in per system
    workloads: tuple[str, ...]
    photo: PhotoPlan
    faces: FacesPlan
    api_processes: int = 1  # HTTP processes of ours (and of vLLM's server) over the one engine

    @property
    def engine(self) -> EngineFlags:
        """The engine settings of every system in this run."""
        return EngineFlags(stream_interval=self.stream_interval)

    def systems(self) -> tuple[str, ...]:
        """The systems the chosen workloads need, in SYSTEMS order."""
        return tuple(s for s in SYSTEMS if any(s in WORKLOAD_SYSTEMS[w] for w in self.workloads))

    def noise_args(self) -> list[str]:
        n = self.noise
        return [
            *("--max-noise", str(n.max_share), "--attempts", str(n.attempts)),
            *("--quiet-wait", str(n.quiet_wait_s), "--deadline", str(n.deadline)),
        ]
