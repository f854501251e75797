"""OpenAI's chat completions (request and response) and models list, as pydantic models."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from server.protocol.base import Refused, StrictModel


class PromptCacheBreakpoint(StrictModel):
    """OpenAI's explicit prompt-cache marker on a content part; accepted and ignored (vLLM's
    prefix cache needs no markers)."""

    mode: Literal["explicit"] | None = None
    ttl: Literal["30m", "12h"] | None = None


class TextPart(StrictModel):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class ImageURL(StrictModel):
    url: str = Field(description="`data:image/{jpeg,png,webp};base64,...`, or http(s) if enabled.")
    detail: Literal["auto", "low", "high", "original"] | None = Field(
        None, description="`low`: one tile; `high` and `original`: as many as the model takes."
    )


class ImagePart(StrictModel):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class RefusalPart(StrictModel):
    """An assistant's earlier refusal, in its content; rendered as what it said."""

    type: Literal["refusal"]
    refusal: str


class InputAudioPart(StrictModel):
    type: Literal["input_audio"]
    input_audio: Refused
    prompt_cache_breakpoint: Refused | None = None


class FilePart(StrictModel):
    type: Literal["file"]
    file: Refused
    prompt_cache_breakpoint: Refused | None = None


ContentPart = Annotated[
    TextPart | ImagePart | RefusalPart | InputAudioPart | FilePart, Field(discriminator="type")
]

# Message fields only one role may carry.
_ROLE_FIELDS = {
    "refusal": "assistant",
    "tool_calls": "assistant",
    "function_call": "assistant",
    "audio": "assistant",
    "tool_call_id": "tool",
}


class Message(StrictModel):
    # "tool" and "function" are OpenAI's roles, refused (tool calling) past validation.
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[Refused] | None = Field(None, max_length=128)
    tool_call_id: str | None = None
    function_call: Refused | None = None
    audio: Refused | None = None

    @model_validator(mode="after")
    def _content_required(self) -> Message:
        if self.content is None and self.role in ("system", "developer", "user"):
            raise ValueError(f"a {self.role} message needs content")
        for name, role in _ROLE_FIELDS.items():
            if getattr(self, name) is not None and self.role != role:
                raise ValueError(f"only {role} messages take {name}")
        parts = self.content if isinstance(self.content, list) else []
        if self.role != "assistant" and any(isinstance(part, RefusalPart) for part in parts):
            raise ValueError("only assistant messages take refusal parts")
        return self


class JSONSchemaFormat(StrictModel):
    name: str = Field(max_length=64)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema")
        return self


# Longest regex a caller may constrain output with; patterns inside JSON schemas share the cap
# (server/structured.py checks those, with the other caps on constraints).
MAX_REGEX_CHARS = 4096


class StructuredOutputs(StrictModel):
    """vLLM's extension (`extra_body={"structured_outputs": ...}`); exactly one field."""

    json_: dict[str, Any] | None = Field(None, alias="json")
    choice: list[str] | None = Field(None, min_length=1, max_length=256)
    regex: str | None = Field(None, max_length=MAX_REGEX_CHARS)

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        if sum(v is not None for v in (self.json_, self.choice, self.regex)) != 1:
            raise ValueError("structured_outputs takes exactly one of json, choice, regex")
        return self


class StreamOptions(StrictModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # ignored: no padding is added to stream events


class PromptCacheOptions(StrictModel):
    """Accepted and ignored: vLLM caches prompt prefixes by itself."""

    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class ChatTemplateKwargs(StrictModel):
    """vLLM's `chat_template_kwargs`, allow-listed: FaceLLM's template reads none of them, so only
    what clients commonly send is accepted (and has no effect); any other key is a 400 naming it."""

    enable_thinking: bool | None = None


# Largest logit_bias a caller may send (OpenAI's own cap is 300 entries), and the token-id keys:
# decimal, as OpenAI's JSON shape makes them strings; the vocabulary bound is the engine's check.
MAX_LOGIT_BIAS = 1024
MAX_STOP_TOKEN_IDS = 64
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
TokenIdKey = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
TokenId = Annotated[int, Field(ge=0, lt=10**9)]
Bias = Annotated[float, Field(ge=-100, le=100)]


class ChatCompletionRequest(StrictModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=128, description="Choices; at most the server's max_n.")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[TokenIdKey, Bias] | None = Field(
        None, max_length=MAX_LOGIT_BIAS, description="Token id (a decimal string) → bias added."
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    # vLLM's sampling extras (`extra_body` in the openai SDK), with vLLM's own bounds.
    top_k: int | None = Field(None, ge=-1, lt=2**31, description="0 or -1: all tokens.")
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    min_tokens: int | None = Field(None, ge=0, description="At most max_tokens.")
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    stop_token_ids: list[TokenId] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS)
    include_stop_str_in_output: bool | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None

    # Accepted and ignored: bookkeeping, routing and caching hints for OpenAI's platform, and
    # controls for kinds of model this is not (reasoning effort, verbosity).
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    safety_identifier: str | None = Field(None, max_length=256)
    prompt_cache_key: str | None = Field(None, max_length=1024)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    reasoning_effort: ReasoningEffort | None = None
    parallel_tool_calls: bool | None = None

    # Honoured only when they ask for nothing this server lacks (text out, no tools), refused
    # otherwise by server/capabilities.py.
    modalities: list[Literal["text", "audio"]] | None = Field(None, max_length=2)
    tools: list[Refused] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | Refused | None = None
    functions: list[Refused] | None = Field(None, max_length=128)
    function_call: Literal["none", "auto"] | Refused | None = None
    audio: Refused | None = None
    prediction: Refused | None = None
    web_search_options: Refused | None = None
    moderation: Refused | None = None

    @model_validator(mode="after")
    def _stop_bounded(self) -> ChatCompletionRequest:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings of at most 256 characters")
        return self


# --- responses ---------------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "facellm"
    max_model_len: int | None = None
    parent: str | None = Field(
        default=None, description="For a LoRA adapter: the base model it adapts."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
