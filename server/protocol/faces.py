"""The faces endpoint's request and answer, as pydantic models."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.protocol.base import StrictModel
from server.protocol.chat import Usage

Threshold = Annotated[float, Field(ge=0, le=1)]


class FaceAnalysisRequest(StrictModel):
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
