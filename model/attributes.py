"""The face attribute vocabulary: one definition from which schema and questions derive.

Applications store these fields, so every value comes from a closed set, and every set has an
abstain value ("uncertain" or "not_visible") so the model is never forced to guess. The value sets
follow the datasets FaceLLM's labels come from (FairFace for age, gender and race; AffectNet for
expression) so answers stay in the vocabulary the model was trained on. Each attribute is asked
as one multiple-choice question (model/questions.py), its values the lettered options.

`perceived_race` is served only when the operator lists it: the EU AI Act prohibits biometric
categorisation systems that infer race, and no large commercial face API offers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from model.questions import MultipleChoice

# Bumped when the response's shape changes (2026-12-06: landmarks, scores are probabilities).
SCHEMA_VERSION = "2026-12-06.1"
# Bumped when the questions change (2026-12-06: one multiple-choice question per attribute).
PROMPT_VERSION = "2026-12-06.1"


@dataclass(frozen=True)
class Attribute:
    """One answer field: its name, what it means, its closed value set (abstain included), and
    the question that asks for it."""

    name: str
    description: str
    values: tuple[str, ...]
    abstain: str
    question: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "age_group",
        "Apparent age range of the person, in years (FairFace bins).",
        ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+", "uncertain"),
        "uncertain",
        "What is the apparent age of the person in the image, in years?",
    ),
    Attribute(
        "perceived_gender",
        "Gender as perceived from appearance alone (FairFace labels), not an identity claim.",
        ("male", "female", "uncertain"),
        "uncertain",
        "What is the gender of the person in the image, as perceived from appearance?",
    ),
    Attribute(
        "perceived_race",
        "Racial group as perceived from appearance alone (FairFace groups), not an identity claim.",
        (
            "white",
            "black",
            "latino_hispanic",
            "east_asian",
            "southeast_asian",
            "indian",
            "middle_eastern",
            "uncertain",
        ),
        "uncertain",
        "What is the race of the person in the image, as perceived from appearance?",
    ),
    Attribute(
        "apparent_expression",
        "Facial expression as it appears (AffectNet categories), not the felt emotion.",
        (
            "neutral",
            "happy",
            "sad",
            "surprise",
            "fear",
            "disgust",
            "anger",
            "contempt",
            "uncertain",
        ),
        "uncertain",
        "What facial expression does the person in the image show?",
    ),
    Attribute(
        "head_pose",
        "Where the face points, seen from the camera: straight at it, turned to the image's "
        "left or right, tilted up or down.",
        ("frontal", "left_profile", "right_profile", "up", "down", "uncertain"),
        "uncertain",
        "Where does the face of the person in the image point, seen from the camera?",
    ),
    Attribute(
        "eyewear",
        "What is worn over the eyes.",
        ("none", "glasses", "sunglasses", "not_visible"),
        "not_visible",
        "What does the person in the image wear over the eyes?",
    ),
    Attribute(
        "facial_hair",
        "Visible facial hair; the most prominent kind when several are present.",
        ("none", "stubble", "mustache", "goatee", "beard", "not_visible"),
        "not_visible",
        "What facial hair does the person in the image have?",
    ),
    Attribute(
        "face_covering",
        "What hides part of the face, if anything.",
        ("none", "mask", "hand", "hair", "other", "uncertain"),
        "uncertain",
        "What, if anything, hides part of the face of the person in the image?",
    ),
    Attribute(
        "image_quality",
        "The main limit on how well the face can be seen in this image.",
        ("good", "blurry", "low_light", "overexposed", "low_resolution", "uncertain"),
        "uncertain",
        "What most limits how well the face can be seen in the image?",
    ),
)

_BY_NAME: dict[str, Attribute] = {a.name: a for a in ATTRIBUTES}
ALL_NAMES: tuple[str, ...] = tuple(_BY_NAME)
# Served unless the operator lists the attributes: all but perceived_race (see above).
OPT_IN: frozenset[str] = frozenset({"perceived_race"})
DEFAULT_NAMES: tuple[str, ...] = tuple(n for n in ALL_NAMES if n not in OPT_IN)


def attribute(name: str) -> Attribute:
    """The attribute called `name`; UnknownAttribute if there is none."""
    if name not in _BY_NAME:
        raise UnknownAttribute(name)
    return _BY_NAME[name]


class UnknownAttribute(ValueError):
    """A configured attribute name is not in the vocabulary."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown face attribute {name!r}; known: {', '.join(ALL_NAMES)}")
        self.name = name


class AttributeNotServed(ValueError):
    """A request asked for an attribute this server does not answer.

    `name` is what the HTTP layer reports as the error's `param`; for an empty selection it is
    the request field itself, "attributes".
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}" if name != "attributes" else reason)
        self.name = name
        self.reason = reason


def _canonical(names: Iterable[str]) -> tuple[str, ...]:
    """Known names, deduplicated, in vocabulary order, so prompts and schemas are deterministic."""
    wanted: set[str] = set()
    for name in names:
        if name not in _BY_NAME:
            raise UnknownAttribute(name)
        wanted.add(name)
    return tuple(n for n in ALL_NAMES if n in wanted)


@dataclass(frozen=True)
class AttributePolicy:
    """Which attributes this deployment serves; requests may ask for a subset."""

    enabled: tuple[str, ...] = DEFAULT_NAMES

    @classmethod
    def from_names(cls, names: Sequence[str] | None) -> AttributePolicy:
        """Build from the `attributes` setting; None means all but the opt-in ones."""
        if names is None:
            return cls()
        enabled = _canonical(names)
        if not enabled:
            raise ValueError("at least one face attribute must be enabled")
        return cls(enabled)

    def select(self, requested: Sequence[str] | None) -> tuple[str, ...]:
        """The attributes to answer for one request; None means all enabled ones."""
        if requested is None:
            return self.enabled
        if not requested:
            raise AttributeNotServed("attributes", "at least one attribute must be requested")
        for name in requested:
            if name not in _BY_NAME:
                raise AttributeNotServed(name, "unknown attribute")
            if name not in self.enabled:
                raise AttributeNotServed(name, "attribute disabled on this server")
        return _canonical(requested)


def json_schema(names: Sequence[str]) -> dict[str, Any]:
    """A flat JSON schema of enum strings: simple enough for every structured-output backend."""
    selected = _canonical(names)
    return {
        "type": "object",
        "properties": {
            n: {
                "type": "string",
                "enum": list(_BY_NAME[n].values),
                "description": _BY_NAME[n].description,
            }
            for n in selected
        },
        "required": list(selected),
        "additionalProperties": False,
    }


# What every question of a face says before its own words (FaceXBench's task description):
# the questions of one face share their prompt up to the end of this line.
FACE_TASK = "The image shows the face of one person, cropped from a photo."


@cache
def multiple_choice(name: str) -> MultipleChoice:
    """The question that asks for attribute `name`: its values as the options, in order (the
    abstain value among them), each spelled as words."""
    attr = attribute(name)
    options = tuple(v.replace("_", " ") for v in attr.values)
    return MultipleChoice(attr.question, options, task_description=FACE_TASK)
