"""Settings: every setting of the server, from the CLI, the environment and the settings file.

Every field is a `FACELLM_<NAME>` environment variable and a `--<name>` CLI flag (kebab-case),
and a key of the YAML file `--config` names. Precedence: CLI flags > environment > the file >
defaults.
The README's settings table is generated from these descriptions (`make settings-doc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from server.settings_file import ConfigError, ConfigFileSource
from server.settings_groups import BatchSettings, FaceSettings

__all__ = ["LORA_RANKS", "ConfigError", "Settings"]


class Settings(BaseSettings, FaceSettings, BatchSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACELLM_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="ignore",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file comes last, just above the defaults; CliApp puts the CLI above everything.
        file = ConfigFileSource(settings_cls)
        return init_settings, env_settings, dotenv_settings, file_secret_settings, file

    # --- settings file -----------------------------------------------------------------------
    config: Path | None = Field(
        None,
        description="YAML file of settings, keys named as the settings (`max_model_len: 8192`, "
        "kebab-case too); an unknown key is an error. A setting given as a CLI flag or "
        "`FACELLM_*` variable replaces the file's value whole.",
    )

    # --- model and engine -------------------------------------------------------------------
    model: str = Field(
        "demo",
        description="What to serve: `demo` (tiny random-weight FaceLLM-architecture model built "
        "offline), a registry name (`FaceLLM-1B`, `-8B`, `-38B`), a hub id, or a local "
        "directory.",
    )
    served_model_name: str | None = Field(
        None, description="Model id shown by /v1/models and accepted in requests; default: derived."
    )
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "facellm",
        description="Where the demo model is built and hub downloads are kept.",
    )
    allow_download: bool = Field(
        True, description="Download hub weights when not cached; off = offline, fail clearly."
    )
    model_revision: str | None = Field(
        None,
        min_length=1,
        description="Hub revision of the model to download and serve: a commit hash pins the "
        "weights (a branch or tag moves). Default: the repo's main branch.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine shards the model over.")
    max_model_len: int = Field(4096, ge=256, description="Context length (prompt + output tokens).")
    max_num_seqs: int = Field(64, ge=1, description="Most sequences the engine batches at once.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use (GPU builds only)."
    )
    dtype: str = Field("bfloat16", description="Weight and activation dtype (`auto`, `bfloat16`…).")
    enforce_eager: bool = Field(
        False, description="Skip CUDA graphs / torch.compile: faster start, slower steps."
    )
    stream_interval: int = Field(
        1,
        ge=1,
        description="Tokens per streamed chunk after the first (vLLM `stream_interval`); the first "
        "and the last chunk go out at once. Above 1, fewer events cost less CPU per request.",
    )
    max_images_per_prompt: int = Field(
        4, ge=1, le=16, description="Images one request may carry (vLLM limit_mm_per_prompt)."
    )
    structured_outputs_backend: str = Field(
        "xgrammar", description="vLLM structured-outputs backend for JSON schema / choice / regex."
    )
    disable_any_whitespace: bool = Field(
        True,
        description="Forbid free whitespace in constrained JSON (weak models pad forever).",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More vLLM engine arguments: JSON object of `AsyncEngineArgs` fields (`vllm "
        'serve` flags in snake_case), e.g. `{"enable_prefix_caching": true, "kv_cache_dtype": '
        '"fp8"}`. Checked at startup, before weights load: an unknown name, or one a setting '
        "here already decides (`max_model_len`…), stops the server (exit 1) naming it.",
    )
    allow_unsafe_engine_args: bool = Field(
        False,
        description="Let engine_args set what runs code or carries a secret (`trust_remote_code`, "
        "class and plugin paths such as `worker_cls` or `logits_processors`, `hf_token`): "
        "refused by default, naming the argument.",
    )

    # --- LoRA adapters -----------------------------------------------------------------------
    lora_adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Fine-tunes served beside the base model: JSON object of name → PEFT LoRA "
        "adapter (local directory, hub id, or `demo-lora-<seed>` for a tiny adapter of the demo "
        "model built offline). Each is a model in /v1/models; requests choose one by `model`.",
    )
    max_loras: int = Field(
        4, ge=1, description="Adapters one engine step can batch together (vLLM max_loras)."
    )
    max_lora_rank: int = Field(
        16,
        description="Largest adapter rank accepted (vLLM max_lora_rank: 1, 8, 16, 32, 64, 128, "
        "256, 320 or 512); it sizes the engine's LoRA buffers.",
    )
    allow_runtime_lora: bool = Field(
        False,
        description="Serve /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's admin "
        "endpoints); they require admin_api_key. LoRA is enabled in the engine when this is on "
        "or lora_adapters is set.",
    )
    admin_api_key: SecretStr | None = Field(
        None,
        description="Key the admin endpoints require (`Authorization: Bearer`); must differ from "
        "every API key, so no client key can change what is served.",
    )

    # --- HTTP --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface to bind; `0.0.0.0` in containers.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="HTTP API processes sharing one engine core (as vLLM's --api-server-count): "
        "the front (JSON, base64, image decoding, face detection, streaming) then uses that "
        "many cores. They share the port (the kernel spreads connections); any one's /metrics "
        "describes them all. Not with allow_runtime_lora.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the JSON-lines logs."
    )
    playground: bool = Field(
        True,
        description="Serve the playground page at `/`: a browser UI over the public API (drop a "
        "photo, see each face boxed with its answers, copy the request as code). Static and "
        "served without a key; its API calls carry the key the user gives.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted API keys (`Authorization: Bearer`); empty = no auth; JSON list.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="File with one API key per line (e.g. a mounted Secret), added to api_keys.",
    )
    metrics_api_key: SecretStr | None = Field(
        None,
        description="Key /metrics requires (`Authorization: Bearer`), separate from api_keys so "
        "Prometheus holds no client key; unset = /metrics open (e.g. reachable only in-cluster).",
    )

    # --- connections -------------------------------------------------------------------------
    max_connections: int = Field(
        2048,
        ge=1,
        description="Most open connections (and requests) at once; past it, new requests get "
        "503 at once. Bounds the file descriptors idle or hostile clients can take.",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="Seconds an idle kept-alive connection stays open."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait for a request's headers once a connection opens or a kept-alive "
        "one starts a new request; past it the connection closes (slowloris).",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request line plus headers; past it, 431 and the connection closes.",
    )
    body_idle_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Longest pause while a request body uploads; past it, 408. A request takes "
        "its admission slot only once its body has arrived and its key was checked.",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Longest time for a whole request body to arrive (408 beyond)."
    )
    write_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for a client to take one write of the response: a client that "
        "stops reading is cut off, its engine request aborted and its slot freed. Generation "
        "responses, writes included, also end at request_timeout_s.",
    )

    # --- limits ------------------------------------------------------------------------------
    max_concurrent_requests: int = Field(
        128,
        ge=1,
        description="Requests in flight or queued before new ones get 429 + Retry-After: refusing "
        "fast beats queueing past any client's timeout, and lets the load balancer go elsewhere.",
    )
    admission_work_tokens: int | None = Field(
        65_536,
        ge=1,
        description="Engine work all requests in flight may reserve, in sequences × output "
        "tokens (a chat request: n × max_tokens; a faces request: faces × attributes × one "
        "token); past it, 429 + Retry-After before any image is decoded. A request larger than "
        "the whole budget runs alone. Unset (null): requests are only counted.",
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Deadline for one request, end to end; past it, 504 and abort."
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    engine_dead_exit_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Once the engine is found dead (checked every second) or stalled, the most "
        "seconds until the process exits non-zero (3 dead, 4 stalled) for its supervisor to "
        "restart it. Until then /health and /ready answer 503, and so does every request.",
    )
    engine_stall_timeout_s: float = Field(
        60.0,
        ge=0,
        description="Seconds without a token or a finished request from the engine, while "
        "requests wait for it, after which it counts as stalled (exit 4); 0 = off. Keep it above "
        "the longest prefill.",
    )
    max_body_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    max_image_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest encoded image, checked before decoding."
    )
    max_image_pixels: int = Field(
        25_000_000,
        ge=4096,
        description="Largest image (width × height) read from its header before decoding "
        "(decompression bombs).",
    )
    max_jpeg_scans: int = Field(
        64,
        ge=1,
        description="Most scans a JPEG may have, counted before decoding: each scan is a full "
        "pass over the image, and a few hundred KB of repeated scans cost minutes of CPU. "
        "Real progressive photos have about 10.",
    )
    image_decode_timeout_s: float = Field(
        5.0,
        gt=0,
        description="CPU time budget of one image decode (wall clock, checked between chunks "
        "of input); past it the image is refused with 400 and its thread stops.",
    )
    image_pixel_budget: int | None = Field(
        None,
        ge=1,
        description="Decoded pixels all requests together may hold while decoding images (a "
        "100 KB PNG can declare 25 MP); past it, decodes wait their turn, up to the request "
        "timeout, then 503. Default: a sixteenth of the container's memory at 8 bytes a pixel.",
    )
    max_tiles: int | None = Field(
        None,
        ge=1,
        description="Tiles per chat image for `detail: auto` or none (`low` = 1 tile, `high` = "
        "the model's maximum). A tile is the model's input square (448 px for FaceLLM, 64 for "
        "the demo); images are decoded and resized only as far as their tiles need. Default: "
        "the model's maximum (FaceLLM: 12, plus a thumbnail).",
    )
    max_messages: int = Field(64, ge=1, description="Most messages in one chat request.")
    max_text_chars: int = Field(
        32_000, ge=1, description="Most characters of text across one request's messages."
    )
    max_tokens_limit: int = Field(
        2048, ge=1, description="Largest max_tokens a caller may ask for."
    )
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when the caller gives none.")
    max_n: int = Field(
        8,
        ge=1,
        le=128,
        description="Most choices (`n`) one chat request may ask for; each is a sequence of its "
        "own in the engine's batch (max_num_seqs).",
    )

    # --- remote images -----------------------------------------------------------------------
    allow_remote_images: bool = Field(
        False,
        description="Fetch http(s) image URLs; off by default (SSRF). data: URLs always work.",
    )
    remote_image_domains: list[str] = Field(
        default_factory=list,
        description="Domains remote images may come from (exact or subdomain); required when "
        "remote images are allowed.",
    )
    remote_image_timeout_s: float = Field(
        5.0, gt=0, description="Total time to fetch one remote image, redirects included."
    )

    @model_validator(mode="after")
    def _keys_have_text(self) -> Self:
        """A key of blanks would let an empty `Authorization: Bearer` through."""
        for i, key in enumerate(self.api_keys):
            if not key.get_secret_value().strip():
                raise ValueError(f"api_keys[{i}] is empty or whitespace: every API key needs text")
        metrics = self.metrics_api_key
        if metrics is not None and not metrics.get_secret_value().strip():
            raise ValueError(
                "metrics_api_key is empty or whitespace: unset it to leave /metrics open"
            )
        return self

    @model_validator(mode="after")
    def _remote_images_have_domains(self) -> Self:
        if self.allow_remote_images and not any(d.strip(" .*") for d in self.remote_image_domains):
            raise ValueError("remote_image_domains is required when allow_remote_images is on")
        return self

    @model_validator(mode="after")
    def _lora_consistent(self) -> Self:
        if self.max_lora_rank not in LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {', '.join(map(str, LORA_RANKS))}")
        if self.allow_runtime_lora and self.api_processes > 1:
            raise ValueError("allow_runtime_lora needs api_processes 1: each holds its adapters")
        if self.allow_runtime_lora and self.admin_api_key is None:
            raise ValueError("allow_runtime_lora needs admin_api_key: the endpoints are admin-only")
        if any(not name.strip() for name in self.lora_adapters):
            raise ValueError("lora_adapters: every adapter needs a non-empty name")
        return self


# The adapter ranks vLLM can size its LoRA buffers for.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
