"""Settings: the one place that reads the environment.

Every field is a `FACELLM_<NAME>` environment variable and a `--<name>` CLI flag (kebab-case).
The README's settings table is generated from these descriptions (`make settings-doc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACELLM_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="ignore",
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

    # --- HTTP --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface to bind; `0.0.0.0` in containers.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the JSON-lines logs."
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
        description="Largest request line plus headers; past it, 400 and the connection closes.",
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

    # --- faces -------------------------------------------------------------------------------
    attributes: list[str] | None = Field(
        None,
        description="Face attributes served (JSON list); default: all. Disabled ones vanish from "
        "schema, prompt and response.",
    )
    face_detector: Literal["haar", "yunet"] = Field(
        "haar",
        description="Face detector: OpenCV's bundled Haar cascade, or YuNet (needs a model).",
    )
    yunet_model_path: Path | None = Field(
        None, description="YuNet ONNX file (face_detection_yunet_*.onnx) when face_detector=yunet."
    )
    max_faces: int = Field(8, ge=1, le=64, description="Most faces analysed in one image.")
    face_tiles: int = Field(
        1,
        ge=1,
        description="Tiles per face crop. 1 is how FaceLLM was trained (FairFace crops, one "
        "tile each); more tiles cost more prefill.",
    )
