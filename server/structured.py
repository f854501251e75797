"""Structured-output constraints: the request's form → the engine's, within caps.

Every constraint is turned into a grammar by the engine (xgrammar), twice: once while vLLM checks
the request (in its single input-processing thread, ahead of every other request's prompt) and
once in the engine core's compile thread (one on a 2-core machine, ahead of every other
constrained request, faces included). Neither has a time limit for JSON schemas in vLLM 0.32
(`VLLM_REGEX_COMPILATION_TIMEOUT_S` covers top-level regexes only), so the cost must be bounded
here, before the engine sees the request. Measured on xgrammar 0.2.8: schema size, nesting and
plain pattern length cost little; counted repetitions inside a schema `pattern` cost roughly
quadratically in the count (`a{1000}` 0.06 s, `a{4000}` 0.9 s, `a{8000}` 2.5 s, nine bytes
each; a 5.6 KB schema of 100 `a{1000}` patterns 5.3 s), so their sum per schema is capped too.
A top-level regex with the same repetitions compiles in about a millisecond.
"""

from __future__ import annotations

import json
import re
from typing import Any

from model.engine import StructuredOutput
from server import protocol as p
from server.errors import InvalidRequest

MAX_SCHEMA_BYTES = 64 * 1024  # the schema as JSON (what the engine is handed)
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays in the schema document (vLLM allows 64)
MAX_CHOICE_CHARS = 16 * 1024  # all `choice` strings together
MAX_SCHEMA_REPEAT = 1024  # counted repetitions ({n}, {n,m}, {n,}) across a schema's patterns

# A counted repetition not written as escaped braces; an escaped `\{9\}` counted anyway only errs
# toward refusing, and nobody writes one in a schema pattern.
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def structured_output(req: p.ChatCompletionRequest) -> StructuredOutput | None:
    """The engine's constraint for a chat request, or None; caps checked first."""
    fmt, ext = req.response_format, req.structured_outputs
    if fmt is not None and fmt.type != "text" and ext is not None:
        raise InvalidRequest(
            "Give either response_format or structured_outputs, not both.",
            param="structured_outputs",
            code="invalid_value",
        )
    if ext is not None:
        if ext.json_ is not None:
            check_schema(ext.json_, "structured_outputs.json")
        if ext.choice:
            _check_choice(ext.choice)
        choice = tuple(ext.choice) if ext.choice else None
        return StructuredOutput(json_schema=ext.json_, choice=choice, regex=ext.regex)
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredOutput(json_object=True)
    assert fmt.json_schema is not None
    check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
    return StructuredOutput(json_schema=fmt.json_schema.schema_)


def check_schema(schema: dict[str, Any], param: str) -> None:
    """Refuse a schema past any cap, with a code naming the cap, before the engine compiles it."""
    patterns = _patterns_within_depth(schema, param)
    if len(json.dumps(schema, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(
            f"The JSON schema exceeds {MAX_SCHEMA_BYTES} bytes.",
            param=param,
            code="schema_too_large",
        )
    repeats = 0
    for pattern in patterns:
        if len(pattern) > p.MAX_REGEX_CHARS:
            raise InvalidRequest(
                f"A pattern in the JSON schema exceeds {p.MAX_REGEX_CHARS} characters.",
                param=param,
                code="pattern_too_long",
            )
        repeats += sum(max(int(low), int(high or 0)) for low, high in _REPEAT.findall(pattern))
    if repeats > MAX_SCHEMA_REPEAT:
        raise InvalidRequest(
            f"The patterns in the JSON schema repeat more than {MAX_SCHEMA_REPEAT} times in "
            "all (the counts in {n} and {n,m}); use fewer or smaller counts.",
            param=param,
            code="pattern_too_complex",
        )


def _patterns_within_depth(schema: dict[str, Any], param: str) -> list[str]:
    """Every regex in the schema (`pattern` values, `patternProperties` keys), refusing one nested
    deeper than the cap. Iterative, and stops at the first container past the cap. Everything is
    walked, `enum` or `default` values included: which keys hold data rather than subschemas
    depends on the parent (a property may be called "enum"), and a pattern hidden in the wrong
    guess would escape the caps; a string under a "pattern" key in data only errs toward 400."""
    patterns: list[str] = []
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidRequest(
                f"The JSON schema nests objects and arrays more than {MAX_SCHEMA_DEPTH} deep.",
                param=param,
                code="schema_too_deep",
            )
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node if isinstance(item, dict | list))
            continue
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                patterns.append(value)
            elif key == "patternProperties" and isinstance(value, dict):
                patterns.extend(value)
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))
    return patterns


def _check_choice(choice: list[str]) -> None:
    if sum(len(c) for c in choice) > MAX_CHOICE_CHARS:
        raise InvalidRequest(
            f"The choices exceed {MAX_CHOICE_CHARS} characters in all.",
            param="structured_outputs.choice",
            code="choice_too_long",
        )
