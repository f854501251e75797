"""The engine settings every benchmarked system runs with, in each system's own words.

One `EngineFlags` value, read by all four systems: this server (`FACELLM_*` environment), vLLM's
OpenAI server (its flags), and the two in-process systems, the ceiling (`loadtests.bench.engine`)
and the HTTP floor (`loadtests.bench.floor`), which take them as `--max-model-len`… and build
their `VLLMConfig` from them as the server does (server/engine_setup.py). See
docs/platform-notes.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from model.vllm_args import VLLMConfig
from server import engine_setup
from server.config import Settings

SERVED_MODEL_NAME = "demo"
# The engine's CPU settings (a 1-GiB KV cache; vLLM's processes talk over loopback).
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1"}


@dataclass(frozen=True)
class EngineFlags:
    max_model_len: int = 2048
    max_num_seqs: int = 64
    max_images: int = 4  # images per prompt
    stream_interval: int = 1
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    structured_backend: str = "xgrammar"
    disable_any_whitespace: bool = True

    def facellm_env(self) -> dict[str, str]:
        """This server's settings (server/config.py)."""
        return {
            "FACELLM_ENFORCE_EAGER": str(self.enforce_eager).lower(),
            "FACELLM_DTYPE": self.dtype,
            "FACELLM_MAX_MODEL_LEN": str(self.max_model_len),
            "FACELLM_MAX_NUM_SEQS": str(self.max_num_seqs),
            "FACELLM_MAX_IMAGES_PER_PROMPT": str(self.max_images),
            "FACELLM_STREAM_INTERVAL": str(self.stream_interval),
            "FACELLM_STRUCTURED_OUTPUTS_BACKEND": self.structured_backend,
            "FACELLM_DISABLE_ANY_WHITESPACE": str(self.disable_any_whitespace).lower(),
        }

    def vllm_args(self) -> list[str]:
        """vLLM's OpenAI server's flags."""
        structured = {
            "backend": self.structured_backend,
            "disable_any_whitespace": self.disable_any_whitespace,
        }
        return [
            *(["--enforce-eager"] if self.enforce_eager else []),
            *("--max-model-len", str(self.max_model_len)),
            *("--max-num-seqs", str(self.max_num_seqs)),
            *(
                "--dtype",
                self.dtype,
                "--limit-mm-per-prompt",
                json.dumps({"image": self.max_images}),
            ),
            *("--structured-outputs-config", json.dumps(structured)),
            *("--stream-interval", str(self.stream_interval)),
        ]

    def in_process_args(self) -> list[str]:
        """The flags of the ceiling and the floor (`add_engine_args` reads them back)."""
        return [
            *("--max-model-len", str(self.max_model_len), "--max-num-seqs", str(self.max_num_seqs)),
            *("--max-images", str(self.max_images), "--stream-interval", str(self.stream_interval)),
        ]

    def vllm_config(self, model_dir: Path) -> VLLMConfig:
        """The in-process engine's configuration (the ceiling's and the floor's), made as the
        server makes its own, from settings: every other value is the server's default."""
        settings = Settings(
            served_model_name=SERVED_MODEL_NAME,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            dtype=self.dtype,
            enforce_eager=self.enforce_eager,
            max_images_per_prompt=self.max_images,
            structured_outputs_backend=self.structured_backend,
            disable_any_whitespace=self.disable_any_whitespace,
            stream_interval=self.stream_interval,
        )
        return engine_setup.engine_config(settings, model_dir)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """`--model-dir` and the flags `EngineFlags.in_process_args` writes, with its defaults."""
    d = EngineFlags()
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--max-model-len", type=int, default=d.max_model_len)
    p.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs)
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--stream-interval", type=int, default=d.stream_interval)


def engine_config(args: argparse.Namespace) -> VLLMConfig:
    """The in-process engine's configuration from `add_engine_args`' flags."""
    flags = EngineFlags(
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_images=args.max_images,
        stream_interval=args.stream_interval,
    )
    return flags.vllm_config(args.model_dir)
