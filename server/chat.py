"""Chat-completions service: OpenAI request ⇄ engine request and chunks, whole or streamed.

No FastAPI here: the route hands over a validated `ChatCompletionRequest`, this returns a
`ChatCompletion` or an async iterator of SSE frames.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from model.engine import (
    ChatMessage,
    Engine,
    GenerationChunk,
    GenerationRequest,
    Role,
    SamplingOptions,
    TokenLogprob,
)
from server import protocol as p
from server.capabilities import refuse_unsupported, refuse_unsupported_in_messages
from server.errors import APIError, InternalError, InvalidRequest
from server.generation import resolve_model, run_generation
from server.media import ImageLoader, tile_canvas
from server.structured import structured_output
from server.watchdog import EngineMonitor


@dataclass(frozen=True)
class ChatLimits:
    """What the settings decide for chat completions (the same-named settings, which hold the
    defaults)."""

    max_messages: int
    max_text_chars: int
    max_images: int
    max_tokens_limit: int
    default_max_tokens: int
    request_timeout_s: float
    max_tiles: int | None  # for `detail: auto`; None: the model's maximum
    max_n: int  # most choices per request


class ChatService:
    def __init__(
        self,
        engine: Engine,
        monitor: EngineMonitor,
        limits: ChatLimits,
        images: ImageLoader,
    ) -> None:
        self.engine = engine
        self.monitor = monitor  # the watchdog's: requests report the engine's progress to it
        self.limits = limits
        self.images = images
        plan = engine.tiles
        auto = tile_canvas(plan, limits.max_tiles)
        # OpenAI's `detail`, in tiles: low is one, high is all the model can take.
        high = tile_canvas(plan, None)
        self._needs = {"low": tile_canvas(plan, 1), "high": high, "original": high, "auto": auto}

    def work(self, req: p.ChatCompletionRequest) -> int:
        """The engine work the request may cost, for admission: choices × max tokens."""
        return (req.n or 1) * self._max_tokens(req)

    async def prepare(self, req: p.ChatCompletionRequest) -> GenerationRequest:
        """Validate what pydantic cannot, load images, and build the engine request."""
        adapter = resolve_model(req.model, self.engine)
        refuse_unsupported(req)
        sampling = self._sampling(req)  # cheap checks (caps on constraints) before any decode
        messages = await self._messages(req.messages)
        return GenerationRequest(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            messages=messages,
            sampling=sampling,
            adapter=adapter,
        )

    async def _messages(self, messages: list[p.Message]) -> tuple[ChatMessage, ...]:
        lim = self.limits
        if len(messages) > lim.max_messages:
            raise InvalidRequest(
                f"At most {lim.max_messages} messages per request.",
                param="messages",
                code="too_many_messages",
            )
        refuse_unsupported_in_messages(messages)
        texts, images = _collect_parts(messages)
        if sum(len(t) for t in texts) > lim.max_text_chars:
            raise InvalidRequest(
                f"Message text exceeds {lim.max_text_chars} characters.",
                param="messages",
                code="text_too_long",
            )
        if len(images) > lim.max_images:
            raise InvalidRequest(
                f"At most {lim.max_images} images per request.",
                param="messages",
                code="too_many_images",
            )
        # A task group, not gather: the first image that fails cancels the others' decodes.
        try:
            async with asyncio.TaskGroup() as group:
                loads = [
                    group.create_task(
                        self.images.load(url.url, param, self._needs[url.detail or "auto"])
                    )
                    for param, url in images
                ]
        except* APIError as failures:
            raise failures.exceptions[0] from None
        by_url = iter(load.result().image for load in loads)
        return tuple(
            ChatMessage(
                role=_ROLES[m.role],
                parts=tuple(next(by_url) if part is None else part for part in _parts(m)),
            )
            for m in messages
        )

    def _sampling(self, req: p.ChatCompletionRequest) -> SamplingOptions:
        max_tokens = self._max_tokens(req)
        temperature = 1.0 if req.temperature is None else req.temperature
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest(
                "top_logprobs requires logprobs=true.", param="top_logprobs", code="invalid_value"
            )
        if (req.min_tokens or 0) > max_tokens:
            raise InvalidRequest(
                f"min_tokens may be at most max_tokens ({max_tokens}).",
                param="min_tokens",
                code="invalid_value",
            )
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=stop,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            structured=structured_output(req),
            n=self._choices(req.n or 1, temperature),
            top_k=req.top_k or 0,
            min_p=req.min_p or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            min_tokens=req.min_tokens or 0,
            ignore_eos=bool(req.ignore_eos),
            skip_special_tokens=req.skip_special_tokens is not False,
            logit_bias=tuple((int(token), bias) for token, bias in (req.logit_bias or {}).items()),
            stop_token_ids=tuple(req.stop_token_ids or ()),
            include_stop_str_in_output=bool(req.include_stop_str_in_output),
        )

    def _max_tokens(self, req: p.ChatCompletionRequest) -> int:
        lim = self.limits
        max_tokens = req.max_completion_tokens or req.max_tokens or lim.default_max_tokens
        if max_tokens > lim.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens may be at most {lim.max_tokens_limit}.",
                param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
                code="max_tokens_too_large",
            )
        return max_tokens

    def _choices(self, n: int, temperature: float) -> int:
        if n > self.limits.max_n:
            raise InvalidRequest(
                f"n may be at most {self.limits.max_n}.", param="n", code="n_too_large"
            )
        if n > 1 and temperature == 0:
            # vLLM refuses it too: greedy decoding would give every choice the same answer.
            raise InvalidRequest(
                "n > 1 needs sampling (temperature above 0): greedy choices would all be equal.",
                param="n",
                code="invalid_value",
            )
        return n

    async def complete(self, gen: GenerationRequest) -> p.ChatCompletion:
        answers = [_Answer() for _ in range(gen.sampling.n)]
        async for chunk in run_generation(
            self.engine, self.monitor, gen, self.limits.request_timeout_s
        ):
            answers[chunk.index].add(chunk)
        want_logprobs = gen.sampling.logprobs is not None
        return p.ChatCompletion(
            id=gen.request_id,
            model=gen.adapter or self.engine.model_name,
            choices=[answer.choice(i, want_logprobs) for i, answer in enumerate(answers)],
            usage=_usage([answer.final() for answer in answers]),
        )

    async def open_stream(
        self, req: p.ChatCompletionRequest, gen: GenerationRequest
    ) -> AsyncIterator[str]:
        """Wait for the engine's first chunk before any header goes out, so what only the engine
        refuses (a schema or regex it cannot compile, a prompt past the context) still gets its
        4xx status instead of a 200 and an in-band error."""
        chunks = run_generation(self.engine, self.monitor, gen, self.limits.request_timeout_s)
        try:
            first = await anext(chunks, None)
        except BaseException:
            await chunks.aclose()
            raise
        return self._frames(req, gen, first, chunks)

    async def _frames(
        self,
        req: p.ChatCompletionRequest,
        gen: GenerationRequest,
        first: GenerationChunk | None,
        chunks: AsyncGenerator[GenerationChunk, None],
    ) -> AsyncIterator[str]:
        """SSE frames. Errors after the headers went out travel in-band, then `[DONE]`.

        Frames are built from plain dicts: this runs once per token, where pydantic models cost
        several times more than `json.dumps` for the same bytes. Frames that are ready together
        go out in one write (the opening role chunk with the first token; the last token with
        usage and `[DONE]`): every write costs a syscall here and a wake-up in the client."""
        head = {
            "id": gen.request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": gen.adapter or self.engine.model_name,
        }
        want_logprobs = gen.sampling.logprobs is not None

        def frame(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

        def token_frame(chunk: GenerationChunk) -> str:
            choice: dict[str, Any] = {
                "index": chunk.index,
                "delta": {"content": chunk.text},
                "finish_reason": chunk.finish_reason,
            }
            if want_logprobs:
                choice["logprobs"] = _logprobs(list(chunk.logprobs)).model_dump()
            return frame([choice])

        opening = {"delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        held = "".join(frame([{"index": i, **opening}]) for i in range(gen.sampling.n))
        latest: dict[int, GenerationChunk] = {}  # each choice's last chunk, for usage
        try:
            async for chunk in _chained(first, chunks):
                latest[chunk.index] = chunk
                held += token_frame(chunk)
                # A choice's final chunk waits for the next write (the last one: for usage and
                # [DONE]).
                if chunk.finish_reason is None:
                    yield held
                    held = ""
            if req.stream_options and req.stream_options.include_usage and latest:
                held += frame([], usage=_usage(list(latest.values())).model_dump())
        except APIError as e:
            held += f"data: {json.dumps(e.body())}\n\n"
        finally:
            await chunks.aclose()
        yield held + "data: [DONE]\n\n"


async def _chained(
    first: GenerationChunk | None, rest: AsyncIterator[GenerationChunk]
) -> AsyncIterator[GenerationChunk]:
    """`first`, then the rest; nothing if `first` is None (the stream ended before a chunk)."""
    if first is None:
        return
    yield first
    async for chunk in rest:
        yield chunk


@dataclass
class _Answer:
    """One choice of a whole (non-streamed) completion, gathered from its chunks."""

    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    last: GenerationChunk | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.text.append(chunk.text)
        self.logprobs.extend(chunk.logprobs)
        self.last = chunk

    def final(self) -> GenerationChunk:
        if self.last is None:  # every choice ends with a finish reason, or the request fails
            raise InternalError("The engine ended the request without an answer.")
        return self.last

    def choice(self, index: int, want_logprobs: bool) -> p.Choice:
        return p.Choice(
            index=index,
            message=p.AssistantMessage(content="".join(self.text)),
            finish_reason=self.final().finish_reason,
            logprobs=_logprobs(self.logprobs) if want_logprobs else None,
        )


# OpenAI's roles as the chat template knows them; tool and function messages are refused first.
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}

_ImageSlot = None  # marks where a decoded image goes back into a message's parts


def _parts(message: p.Message) -> list[str | None]:
    """Text pieces and image slots, in order. An assistant's refusal is what it said: its text."""
    if isinstance(message.content, str):
        parts: list[str | None] = [message.content]
    else:
        parts = [_part(part) for part in message.content or ()]
    if message.refusal:
        parts.append(message.refusal)
    return parts


def _part(part: p.ContentPart) -> str | None:
    if isinstance(part, p.ImagePart):
        return _ImageSlot
    if isinstance(part, p.TextPart):
        return part.text
    if isinstance(part, p.RefusalPart):
        return part.refusal
    raise AssertionError(f"{part.type} parts are refused before rendering")


def _collect_parts(
    messages: list[p.Message],
) -> tuple[list[str], list[tuple[str, p.ImageURL]]]:
    """All texts, and every image URL with its parameter path (for error messages)."""
    texts: list[str] = []
    images: list[tuple[str, p.ImageURL]] = []
    for i, m in enumerate(messages):
        texts.extend(piece for piece in _parts(m) if piece is not None)
        for j, part in enumerate(m.content if isinstance(m.content, list) else []):
            if isinstance(part, p.ImagePart):
                images.append((f"messages[{i}].content[{j}].image_url.url", part.image_url))
    return texts, images


def _usage(finals: list[GenerationChunk]) -> p.Usage:
    """Usage of a request from each choice's last chunk: one prompt, every choice's tokens."""
    prompt = finals[0].prompt_tokens if finals else 0
    completion = sum(chunk.completion_tokens for chunk in finals)
    return p.Usage.of(prompt, completion)


def _logprobs(tokens: list[TokenLogprob]) -> p.ChoiceLogprobs:
    return p.ChoiceLogprobs(
        content=[
            p.TokenLogprobOut(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.token.encode()),
                top_logprobs=[
                    p.TopLogprob(token=tok, logprob=lp, bytes=list(tok.encode()))
                    for tok, lp in t.top
                ],
            )
            for t in tokens
        ]
    )
