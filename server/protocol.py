"""The wire formats, as pydantic models: OpenAI's chat completions and models list, the faces
endpoint, and vLLM's LoRA admin bodies.

Requests forbid unknown fields, as OpenAI does, so a typo is a 400 naming the field rather than a
silently ignored setting. No FastAPI and no vLLM here.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# Fields of OpenAI's vocabulary that ask for what this server cannot do (tools, audio, files…) are
# typed loosely (`Refused`): pydantic accepts them, and server/capabilities.py refuses them with a
# 400 naming the missing capability, rather than a confusing validation error about their shape.
Refused = dict[str, Any]


class PromptCacheBreakpoint(_Strict):
    """OpenAI's explicit prompt-cache marker on a content part; accepted and ignored (vLLM's
    prefix cache needs no markers)."""

    mode: Literal["explicit"] | None = None
    ttl: Literal["30m", "12h"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class ImageURL(_Strict):
    url: str = Field(description="`data:image/{jpeg,png,webp};base64,...`, or http(s) if enabled.")
    detail: Literal["auto", "low", "high", "original"] | None = Field(
        None, description="`low`: one tile; `high` and `original`: as many as the model takes."
    )


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class RefusalPart(_Strict):
    """An assistant's earlier refusal, in its content; rendered as what it said."""

    type: Literal["refusal"]
    refusal: str


class InputAudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: Refused
    prompt_cache_breakpoint: Refused | None = None


class FilePart(_Strict):
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


class Message(_Strict):
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


class JSONSchemaFormat(_Strict):
    name: str = Field(max_length=64)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Strict):
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


class StructuredOutputs(_Strict):
    """vLLM's extension (`extra_body={"structured_outputs": ...}`); exactly one field."""

    json_: dict[str, Any] | None = Field(None, alias="json")
    choice: list[str] | None = Field(None, min_length=1, max_length=256)
    regex: str | None = Field(None, max_length=MAX_REGEX_CHARS)

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        if sum(v is not None for v in (self.json_, self.choice, self.regex)) != 1:
            raise ValueError("structured_outputs takes exactly one of json, choice, regex")
        return self


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # ignored: no padding is added to stream events


class PromptCacheOptions(_Strict):
    """Accepted and ignored: vLLM caches prompt prefixes by itself."""

    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class ChatTemplateKwargs(_Strict):
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


class ChatCompletionRequest(_Strict):
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


# --- faces -------------------------------------------------------------------------------------


Threshold = Annotated[float, Field(ge=0, le=1)]


class FaceAnalysisRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "image": "data:image/jpeg;base64,/9j/4AAQSkZJRg...",
                    "attributes": ["age_group", "apparent_expression", "eyewear"],
                    "max_faces": 4,
                    "detect": True,
                }
            ]
        },
    )

    image: str = Field(
        description="The image: a `data:image/{jpeg,png,webp};base64,` URL or raw base64 "
        "(or an http(s) URL when the server allows remote images)."
    )
    model: str | None = None
    attributes: list[str] | None = Field(
        None,
        max_length=64,
        description="Subset of served attributes; default: all served.",
    )
    max_faces: int | None = Field(None, ge=1, le=64, description="Most faces to analyse.")
    detect: bool = Field(
        True, description="Find faces and crop them (25 % margin); false: the image is one face."
    )
    confidence: bool = Field(
        False,
        description="Give each attribute as an object: its value, the probability the model "
        "gave that value among the allowed ones (`confidence`), whether it abstained, and the "
        "other values with theirs (`alternatives`). Default: each attribute is its value.",
    )
    min_confidence: Threshold | dict[str, Threshold] | None = Field(
        None,
        description="Abstain below this confidence: the attribute becomes its abstain value "
        "(`uncertain` or `not_visible`). One threshold for every attribute, or one per "
        "attribute; replaces the server's defaults (FACELLM_MIN_CONFIDENCE) for those it names. "
        "0: never abstain.",
    )


class BoundingBox(BaseModel):
    x: int
    y: int
    w: int
    h: int


class Point(BaseModel):
    x: float
    y: float


class Landmarks(BaseModel):
    """Five points of a face in image pixels; left and right as they appear in the image."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class Face(BaseModel):
    bbox: BoundingBox = Field(description="The detected face box in image pixels.")
    score: float = Field(
        ge=0,
        le=1,
        description="The detector's probability that this is a face (1.0 when detect=false, "
        "and with the Haar detector, which has no probability).",
    )
    landmarks: Landmarks | None = Field(
        description="Eyes, nose tip and mouth corners in image pixels; null when the detector "
        "finds none (detect=false, the Haar detector)."
    )
    attributes: dict[str, str] | dict[str, AttributeAnswer] = Field(
        description="Each attribute's value; with `confidence: true`, an object per attribute."
    )


class Alternative(BaseModel):
    value: str
    confidence: float


class AttributeAnswer(BaseModel):
    value: str
    confidence: float = Field(
        description="The probability the model gave `value` among the attribute's allowed values "
        "(given the face and the attributes answered before it): 0 to 1."
    )
    abstained: bool = Field(
        description="The model's pick fell below min_confidence: `value` is the abstain value, "
        "the pick is among the alternatives."
    )
    alternatives: list[Alternative] = Field(
        description="The other values the model gave probability to, most probable first."
    )


class Versions(BaseModel):
    model: str = Field(description="The base model.")
    adapter: str | None = Field(
        None, description="The LoRA adapter (a fine-tune of the base model) that answered, if any."
    )
    prompt: str
    schema_: str = Field(alias="schema", serialization_alias="schema")
    preprocessing: str = Field(
        description="How faces were cut and sized for the model (crop margin, tile, tiles)."
    )

    model_config = ConfigDict(populate_by_name=True)


class FaceAnalysis(BaseModel):
    id: str
    object: Literal["face.analysis"] = "face.analysis"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    faces: list[Face]
    usage: Usage
    versions: Versions


# --- admin -------------------------------------------------------------------------------------


class LoadAdapterRequest(_Strict):
    """vLLM's body for /v1/load_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128)
    lora_path: str = Field(
        min_length=1,
        max_length=4096,
        description="A directory on the server, a hub id, or `demo-lora-<seed>`.",
    )
    load_inplace: bool = Field(False, description="Replace an adapter already of that name.")


class UnloadAdapterRequest(_Strict):
    """vLLM's body for /v1/unload_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128)
    lora_int_id: int | None = Field(None, description="Accepted from vLLM clients; ignored.")
