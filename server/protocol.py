"""OpenAI chat-completions wire format (the parts we serve), as pydantic models.

Requests forbid unknown fields, as OpenAI does, so a typo is a 400 naming the field rather than a
silently ignored setting. No FastAPI and no vLLM here.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str = Field(description="`data:image/{jpeg,png,webp};base64,...`, or http(s) if enabled.")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> Message:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
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


class ChatCompletionRequest(_Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=128)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None

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
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- faces -------------------------------------------------------------------------------------


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
        None, max_length=64, description="Subset of served attributes; default: all served."
    )
    max_faces: int | None = Field(None, ge=1, le=64, description="Most faces to analyse.")
    detect: bool = Field(
        True, description="Find faces and crop them (25 % margin); false: the image is one face."
    )


class BoundingBox(BaseModel):
    x: int
    y: int
    w: int
    h: int


class Face(BaseModel):
    bbox: BoundingBox = Field(description="The detected face box in image pixels.")
    score: float = Field(
        description="Detector confidence (higher is surer; 1.0 when detect=false)."
    )
    attributes: dict[str, str]


class Versions(BaseModel):
    model: str
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
