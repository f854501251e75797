"""Settings: the one place that reads the environment.

Every field is a `FACELLM_<NAME>` environment variable and a `--<name>` CLI flag (kebab-case),
and a key of the YAML file `--config` names. Precedence: CLI flags > environment > the file >
defaults.
The README's settings table is generated from these descriptions (`make settings-doc`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.types import Traversable

from model.attributes import attribute


class Settings(BaseSettings):
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
    min_confidence: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="Default abstention thresholds, per face attribute (JSON object, e.g. "
        '`{"perceived_race": 0.6}`): an answer the model gave less probability becomes the '
        "attribute's abstain value (`uncertain`/`not_visible`), counted in "
        "facellm_abstentions_total. Requests override with min_confidence. Empty: none.",
    )
    confidence_passes: int = Field(
        9,
        ge=1,
        le=16,
        description="Most decoding passes per face when confidences are computed. Greedy "
        "decoding can end at a value the model found less probable than another (values "
        "sharing leading tokens); the server then fixes the more probable value and decodes the "
        "attributes after it again (the last attribute's needs no pass). 1: one pass, the other "
        "picks stand as decoded. 9, one per attribute: always the most probable.",
    )

    @model_validator(mode="after")
    def _thresholds_name_attributes(self) -> Self:
        for name in self.min_confidence:
            attribute(name)  # UnknownAttribute (a ValueError) names it and lists the known ones
        return self

    @model_validator(mode="after")
    def _lora_consistent(self) -> Self:
        if self.max_lora_rank not in LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {', '.join(map(str, LORA_RANKS))}")
        if self.allow_runtime_lora and self.api_processes > 1:
            raise ValueError("allow_runtime_lora needs api_processes 1: each holds its adapters")
        if self.allow_runtime_lora and self.admin_api_key is None:
            raise ValueError("allow_runtime_lora needs admin_api_key: the endpoints are admin-only")
        admin = self.admin_api_key.get_secret_value().strip() if self.admin_api_key else None
        if admin is not None and (not admin or admin in _user_keys(self)):
            raise ValueError("admin_api_key must be non-empty and differ from every API key")
        if any(not name.strip() for name in self.lora_adapters):
            raise ValueError("lora_adapters: every adapter needs a non-empty name")
        return self


# The adapter ranks vLLM can size its LoRA buffers for.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _user_keys(settings: Settings) -> set[str]:
    return {key.get_secret_value().strip() for key in settings.api_keys}


# FACELLM_ variables that are not server settings: the load tests' own (loadtests/locust).
_OTHER_PREFIXES = ("FACELLM_LOAD_",)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse `FACELLM_*` variables that name no setting: a misspelt `FACELLM_API_KEY` would
    otherwise leave auth off without a word. The error names the nearest setting."""
    known = {f"FACELLM_{name.upper()}" for name in Settings.model_fields}
    for variable in sorted(environ):
        if not variable.upper().startswith("FACELLM_") or variable.upper() in known:
            continue
        if variable.upper().startswith(_OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{variable} is not a setting{hint}")


class ConfigError(ValueError):
    """A setting that cannot work, found before anything starts. The process exits 1 with the
    message alone: a traceback would only point at the code that read the setting."""


class ConfigFileSource(PydanticBaseSettingsSource):
    """The YAML file that `config` names. It sits below the CLI, init and the environment, so it
    learns `config` from them (`current_state`), and leaves out what they already set: their
    value replaces the file's whole, dicts and lists included (never a merge of the two)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config")
        if not path:
            return {}
        values = read_config_file(self.settings_cls, Path(path))
        return {name: value for name, value in values.items() if name not in self.current_state}


class _YamlFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with kebab-case keys read as snake_case."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        data = super()._read_file(file_path)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path}: not a mapping of setting names")
        return {str(key).replace("-", "_"): value for key, value in data.items()}


def read_config_file(settings_cls: type[BaseSettings], path: Path) -> dict[str, Any]:
    """The file's settings by field name; any trouble is a one-line ConfigError."""
    if not path.is_file():  # the YAML source would skip it without a word
        problem = "not a file" if path.exists() else "no such file"
        raise ConfigError(f"config file {path}: {problem}")
    try:
        values = _YamlFile(settings_cls, yaml_file=path).init_kwargs
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({_yaml_problem(e)})") from e
    known = set(settings_cls.model_fields) - {"config"}  # no file names another
    for name in values:
        if name not in known:
            hint = _did_you_mean(name, known)
            raise ConfigError(f"config file {path}: unknown setting {name!r}{hint}")
    return values


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}" if mark is not None else str(problem)


def _did_you_mean(name: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
