"""The face attribute vocabulary: one definition from which schema, prompt and validation derive.

Applications store these fields, so every value comes from a closed set, and every set has an
abstain value ("uncertain" or "not_visible") so the model is never forced to guess. The value sets
follow the datasets FaceLLM's labels come from (FairFace for age, gender and race; AffectNet for
expression) so answers stay in the vocabulary the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Bumped when the answer's shape changes (2026-11-30: per-attribute confidence, abstention).
SCHEMA_VERSION = "2026-11-30.1"
PROMPT_VERSION = "2026-11-26.1"

_MAX_ECHO = 200  # most characters of model text quoted back in an error


@dataclass(frozen=True)
class Attribute:
    """One answer field: its name, what it means, and its closed value set (abstain included)."""

    name: str
    description: str
    values: tuple[str, ...]
    abstain: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "age_group",
        "Apparent age range of the person, in years (FairFace bins).",
        ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+", "uncertain"),
        "uncertain",
    ),
    Attribute(
        "perceived_gender",
        "Gender as perceived from appearance alone (FairFace labels), not an identity claim.",
        ("male", "female", "uncertain"),
        "uncertain",
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
    ),
    Attribute(
        "head_pose",
        "Where the face points, seen from the camera: straight at it, turned to the image's "
        "left or right, tilted up or down.",
        ("frontal", "left_profile", "right_profile", "up", "down", "uncertain"),
        "uncertain",
    ),
    Attribute(
        "eyewear",
        "What is worn over the eyes.",
        ("none", "glasses", "sunglasses", "not_visible"),
        "not_visible",
    ),
    Attribute(
        "facial_hair",
        "Visible facial hair; the most prominent kind when several are present.",
        ("none", "stubble", "mustache", "goatee", "beard", "not_visible"),
        "not_visible",
    ),
    Attribute(
        "face_covering",
        "What hides part of the face, if anything.",
        ("none", "mask", "hand", "hair", "other", "uncertain"),
        "uncertain",
    ),
    Attribute(
        "image_quality",
        "The main limit on how well the face can be seen in this image.",
        ("good", "blurry", "low_light", "overexposed", "low_resolution", "uncertain"),
        "uncertain",
    ),
)

_BY_NAME: dict[str, Attribute] = {a.name: a for a in ATTRIBUTES}
ALL_NAMES: tuple[str, ...] = tuple(_BY_NAME)


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


class InvalidAnswer(ValueError):
    """The model's text is not a valid answer for the requested attributes."""


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

    enabled: tuple[str, ...] = ALL_NAMES

    @classmethod
    def from_names(cls, names: Sequence[str] | None) -> AttributePolicy:
        """Build from the `attributes` setting; None means all."""
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


def answer_prefix(values: Mapping[str, str]) -> str:
    """The answer's JSON up to and including the last of `values` (canonical order, no
    whitespace: as the schema's grammar spells it), for generation to continue from."""
    fields = ",".join(f'"{name}":"{values[name]}"' for name in _canonical(values))
    return "{" + fields


def continuation_pattern(names: Sequence[str]) -> str:
    """A regex for the rest of an answer after `answer_prefix`: the attributes `names`, in
    canonical order, then the closing brace."""
    fields = "".join(
        f',"{name}":"({"|".join(_literal(v) for v in _BY_NAME[name].values)})"'
        for name in _canonical(names)
    )
    return fields + r"\}"


def _literal(text: str) -> str:
    """`text` as a regex matching itself; only the metacharacters are escaped (grammar
    compilers take fewer escapes than Python's `re`)."""
    return "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in text)


_REGEX_SPECIAL = frozenset("\\.^$*+?()[]{}|")


def prompt(names: Sequence[str]) -> str:
    """The instruction sent with one face crop; says what each field means and how to abstain."""
    lines = [
        "Describe the person's face in this image.",
        "Answer in JSON: one object with exactly these keys, each set to one of the listed values.",
        "",
    ]
    for name in _canonical(names):
        attr = _BY_NAME[name]
        lines.append(f"- {name}: {attr.description} One of: {', '.join(attr.values)}.")
    lines += [
        "",
        'If the image does not show enough to decide, answer "uncertain" or "not_visible" '
        "(whichever the field lists) instead of guessing.",
        "Answer in JSON only, with no other text.",
    ]
    return "\n".join(lines)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise InvalidAnswer("duplicate keys in the answer object")
    return dict(pairs)


def parse_answer(text: str, names: Sequence[str]) -> dict[str, str]:
    """Strictly validate the model's answer: exactly `names` as keys, each value in its set."""
    selected = _canonical(names)
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"answer is not valid JSON ({exc.msg}): {_short(text)!r}") from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"answer is not a JSON object: {_short(text)!r}")
    missing = [n for n in selected if n not in data]
    if missing:
        raise InvalidAnswer(f"answer misses keys: {', '.join(missing)}")
    extra = sorted(k for k in data if k not in selected)
    if extra:
        raise InvalidAnswer(f"answer has unexpected keys: {_short(', '.join(extra))}")
    for name in selected:
        value = data[name]
        if not isinstance(value, str) or value not in _BY_NAME[name].values:
            raise InvalidAnswer(f"{name}: {_short(repr(value))} is not an allowed value")
    return {n: data[n] for n in selected}
