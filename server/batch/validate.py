"""A batch's input, checked whole before any line runs (all or nothing, as OpenAI does).

Each line is OpenAI's `{custom_id, method, url, body}`; its body goes through the same pydantic
request model the live endpoint uses, so a batch accepts exactly what the endpoint would.
What only running can find (an image that does not decode, no face in it) is that line's error
at run time, answered as the live endpoint would have answered it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from server.batch.records import LineSpec
from server.errors import clipped, validation_message
from server.protocol import ChatCompletionRequest, FaceAnalysisRequest

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/faces/analyze": FaceAnalysisRequest,
}
MAX_CUSTOM_ID = 512
MAX_REPORTED = 1000  # errors kept on the batch; the error file names every bad line


@dataclass
class Checked:
    """What validation found: the lines to run, or the errors that fail the batch."""

    lines: list[LineSpec] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's batch error objects

    def fail(self, line: int, code: str, message: str, param: str | None = None) -> None:
        self.errors.append(
            {"code": code, "message": f"Line {line}: {message}", "param": param, "line": line}
        )


def check_lines(
    endpoint: str, lines: Iterable[tuple[int, bytes]], max_line_bytes: int, max_lines: int
) -> Checked:
    """`lines` as (offset, bytes); blank lines are skipped, line numbers count from 1."""
    checked = Checked()
    seen: set[str] = set()
    for number, (offset, raw) in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if len(checked.lines) + len(checked.errors) >= max_lines:
            checked.fail(number, "too_many_lines", f"a batch holds at most {max_lines} lines.")
            break
        if len(raw) > max_line_bytes:
            checked.fail(number, "line_too_large", f"longer than {max_line_bytes} bytes.")
            continue
        custom_id = _check_line(checked, number, raw, endpoint)
        if custom_id is None:
            continue
        if custom_id in seen:
            checked.fail(
                number,
                "duplicate_custom_id",
                f"custom_id {json.dumps(clipped(custom_id))} appears more than once.",
                "custom_id",
            )
            continue
        seen.add(custom_id)
        checked.lines.append(LineSpec(number, custom_id, offset, len(raw)))
    if not checked.lines and not checked.errors:
        checked.fail(0, "empty_file", "the input file has no requests.")
    return checked


def _check_line(checked: Checked, number: int, raw: bytes, endpoint: str) -> str | None:
    """The line's custom_id when the line is valid; else its error is recorded."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        checked.fail(number, "invalid_json_line", "not a JSON object.")
        return None
    if not isinstance(line, dict):
        checked.fail(number, "invalid_json_line", "not a JSON object.")
        return None
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        checked.fail(
            number,
            "invalid_custom_id",
            f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} characters.",
            "custom_id",
        )
        return None
    if line.get("method") != "POST":
        checked.fail(number, "invalid_method", "method must be POST.", "method")
        return None
    if line.get("url") != endpoint:
        checked.fail(number, "invalid_url", f"url must be the batch's endpoint, {endpoint}.", "url")
        return None
    unknown = set(line) - {"custom_id", "method", "url", "body"}
    if unknown:
        name = clipped(sorted(unknown)[0])
        checked.fail(number, "invalid_request", f"unknown field {name!r}.", name)
        return None
    problem = body_problem(endpoint, line.get("body"))
    if problem is not None:
        message, param = problem
        checked.fail(number, "invalid_request", message, param)
        return None
    return custom_id


def body_problem(endpoint: str, body: object) -> tuple[str, str | None] | None:
    """Why the endpoint would refuse this body before running it (message, param), or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object.", "body"
    try:
        request = REQUEST_MODELS[endpoint].model_validate(body)
    except ValidationError as e:
        message, param = validation_message(e.errors())
        return message, None if param is None else f"body.{param}"
    if getattr(request, "stream", None):
        return "stream is not supported in a batch: each answer is one output line.", "body.stream"
    return None
