"""The engine interface the HTTP layer talks to, and the types that cross it.

A narrow interface (start, generate, abort, health, shutdown) keeps `server/` free of vLLM and lets
the HTTP layer be tested against a deterministic fake in milliseconds.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from model.tiles import TilePlan

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn: text pieces and decoded images, in order."""

    role: Role
    parts: tuple[str | Image.Image, ...]


@dataclass(frozen=True)
class StructuredOutput:
    """A constraint on the generated text; exactly one field is set."""

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    choice: tuple[str, ...] | None = None
    regex: str | None = None


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # number of top alternatives per token; None = no logprobs
    structured: StructuredOutput | None = None
    n: int = 1  # choices to generate; the engine streams each with its `index`
    top_k: int = 0  # 0 (or -1): all tokens
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias): a tuple keeps this hashable
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    messages: Sequence[ChatMessage]
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    adapter: str | None = None  # a loaded LoRA adapter's name; None: the base model
    # The engine serves lower values first: interactive requests 0, batch lines more.
    priority: int = 0


@dataclass(frozen=True)
class Adapter:
    """A LoRA fine-tune of the served model, served under its own name."""

    name: str
    path: Path  # a local directory with adapter_config.json and the adapter's weights


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationChunk:
    """What the engine produced since the previous chunk of the same request."""

    text: str
    completion_tokens: int  # cumulative
    prompt_tokens: int
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    index: int = 0  # which choice (0..n-1); completion_tokens is that choice's own count


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int


class EngineError(Exception):
    """The engine failed for reasons that are ours, not the caller's."""


class EngineDeadError(EngineError):
    """The engine process is gone; only a restart helps."""


class EngineAborted(EngineError):
    """The engine ended the request before it finished, without being asked to by us (vLLM's
    finish reason "abort"). Not a completion: what was generated so far is not an answer."""


class AdapterError(ValueError):
    """An adapter that cannot be served: name taken, files unreadable, rank too large, LoRA off."""


class UnknownAdapter(LookupError):
    """No adapter of that name is loaded."""


class InvalidGenerationRequest(ValueError):
    """The engine refused the request as malformed (e.g. prompt longer than the context).

    `param` names the request field the engine blamed, when it said (e.g. "logit_bias" for a
    token id outside the vocabulary), so the caller can be told which of its fields is wrong."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Engine(abc.ABC):
    """An LLM engine hosting one model, and the LoRA adapters loaded over it."""

    model_name: str
    tiles: TilePlan  # how the served model's processor tiles images

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream chunks; closing the iterator early aborts the request in the engine."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None: ...

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise EngineDeadError when the engine can no longer serve."""

    @abc.abstractmethod
    def stats(self) -> EngineStats: ...

    @property
    @abc.abstractmethod
    def adapters(self) -> Sequence[Adapter]:
        """The LoRA adapters loaded now, in load order."""

    @abc.abstractmethod
    async def load_adapter(self, adapter: Adapter) -> None:
        """Serve `adapter` from now on; AdapterError when it cannot be."""

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Stop serving the adapter `name`; UnknownAdapter when none is loaded by that name."""

    @abc.abstractmethod
    async def shutdown(self) -> None: ...
