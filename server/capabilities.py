"""Refusing, by name, what OpenAI's request vocabulary can ask for and this server cannot do.

The request model takes every field the openai SDK can send (server/protocol/), so a client
library's request is never a 400 for an unknown field. Some of those fields ask for a capability
this server lacks: tool and function calling, audio in or out, files, web search, predicted
outputs, moderation. Answering without it would pass a plain completion off as one that used it,
so each is a 400 `unsupported_capability` naming what is missing and the field that asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from server import protocol as p
from server.errors import InvalidRequest

UNSUPPORTED_CAPABILITY = "unsupported_capability"

# What asks for the capability: (param, capability), in the order they are checked.
_Ask = tuple[str, str]

# tool_choice / function_call values that ask for no call: harmless without tools.
_NO_CALL = (None, "none", "auto")


def refuse_unsupported(req: p.ChatCompletionRequest) -> None:
    """The request's own fields (messages: `refuse_unsupported_in_messages`)."""
    _refuse_first(_request_asks(req))


def refuse_unsupported_in_messages(messages: Sequence[p.Message]) -> None:
    """Roles, fields and content parts of messages; call after the message-count cap."""
    _refuse_first(_message_asks(messages))


def _refuse_first(asks: Iterator[_Ask]) -> None:
    if (first := next(asks, None)) is not None:
        param, capability = first
        raise InvalidRequest(
            f"This server does not support {capability} (asked for by `{param}`).",
            param=param,
            code=UNSUPPORTED_CAPABILITY,
        )


def _request_asks(req: p.ChatCompletionRequest) -> Iterator[_Ask]:
    if req.audio is not None:
        yield "audio", "audio output"
    if "audio" in (req.modalities or ()):
        yield "modalities", "audio output"
    if req.tools:
        yield "tools", "tool calling"
    if req.tool_choice not in _NO_CALL:
        yield "tool_choice", "tool calling"
    if req.functions:
        yield "functions", "function calling"
    if req.function_call not in _NO_CALL:
        yield "function_call", "function calling"
    if req.web_search_options is not None:
        yield "web_search_options", "web search"
    if req.prediction is not None:
        yield "prediction", "predicted outputs"
    if req.moderation is not None:
        yield "moderation", "moderation"


def _message_asks(messages: Sequence[p.Message]) -> Iterator[_Ask]:
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if m.role == "tool":
            yield f"{at}.role", "tool calling (tool messages)"
        if m.role == "function":
            yield f"{at}.role", "function calling (function messages)"
        if m.tool_calls:
            yield f"{at}.tool_calls", "tool calling"
        if m.function_call is not None:
            yield f"{at}.function_call", "function calling"
        if m.audio is not None:
            yield f"{at}.audio", "audio (an earlier audio answer)"
        for j, part in enumerate(m.content if isinstance(m.content, list) else ()):
            if isinstance(part, p.InputAudioPart):
                yield f"{at}.content[{j}]", "audio input"
            elif isinstance(part, p.FilePart):
                yield f"{at}.content[{j}]", "file input"
