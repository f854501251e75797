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
from dataclasses import dataclass
from typing import Any

from model.engine import (
    ChatMessage,
    Engine,
    GenerationChunk,
    GenerationRequest,
    SamplingOptions,
    TokenLogprob,
)
from model.tiles import TilePlan
from server import protocol as p
from server.errors import APIError, InvalidRequest
from server.generation import require_served_model, run_generation
from server.media import ImageLoader, Need
from server.structured import structured_output


@dataclass(frozen=True)
class ChatLimits:
    max_messages: int
    max_text_chars: int
    max_images: int
    max_tokens_limit: int
    default_max_tokens: int
    request_timeout_s: float
    max_tiles: int | None = None  # for `detail: auto`; None: the model's maximum


class ChatService:
    def __init__(
        self,
        engine: Engine,
        limits: ChatLimits,
        images: ImageLoader,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.images = images
        plan = engine.tiles
        auto = _canvas(plan, limits.max_tiles)
        # OpenAI's `detail`, in tiles: low is one, high is all the model can take.
        self._needs = {"low": _canvas(plan, 1), "high": _canvas(plan, None), "auto": auto}

    async def prepare(self, req: p.ChatCompletionRequest) -> GenerationRequest:
        """Validate what pydantic cannot, load images, and build the engine request."""
        require_served_model(req.model, self.engine)
        if (req.n or 1) != 1:
            raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_n")
        sampling = self._sampling(req)  # cheap checks (caps on constraints) before any decode
        messages = await self._messages(req.messages)
        return GenerationRequest(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            messages=messages,
            sampling=sampling,
        )

    async def _messages(self, messages: list[p.Message]) -> tuple[ChatMessage, ...]:
        lim = self.limits
        if len(messages) > lim.max_messages:
            raise InvalidRequest(
                f"At most {lim.max_messages} messages per request.",
                param="messages",
                code="too_many_messages",
            )
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
        decoded = await asyncio.gather(
            *(
                self.images.load(url.url, param, self._needs[url.detail or "auto"])
                for param, url in images
            )
        )
        by_url = iter(loaded.image for loaded in decoded)
        return tuple(
            ChatMessage(
                role="system" if m.role == "developer" else m.role,
                parts=tuple(next(by_url) if part is None else part for part in _parts(m)),
            )
            for m in messages
        )

    def _sampling(self, req: p.ChatCompletionRequest) -> SamplingOptions:
        lim = self.limits
        max_tokens = req.max_completion_tokens or req.max_tokens or lim.default_max_tokens
        if max_tokens > lim.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens may be at most {lim.max_tokens_limit}.",
                param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
                code="max_tokens_too_large",
            )
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest(
                "top_logprobs requires logprobs=true.", param="top_logprobs", code="invalid_value"
            )
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=stop,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            structured=structured_output(req),
        )

    async def complete(self, gen: GenerationRequest) -> p.ChatCompletion:
        text: list[str] = []
        logprobs: list[TokenLogprob] = []
        last: GenerationChunk | None = None
        async for chunk in run_generation(self.engine, gen, self.limits.request_timeout_s):
            text.append(chunk.text)
            logprobs.extend(chunk.logprobs)
            last = chunk
        assert last is not None, "the engine ended a request without output"
        return p.ChatCompletion(
            id=gen.request_id,
            model=self.engine.model_name,
            choices=[
                p.Choice(
                    message=p.AssistantMessage(content="".join(text)),
                    finish_reason=last.finish_reason,
                    logprobs=_logprobs(logprobs) if gen.sampling.logprobs is not None else None,
                )
            ],
            usage=_usage(last),
        )

    async def open_stream(
        self, req: p.ChatCompletionRequest, gen: GenerationRequest
    ) -> AsyncIterator[str]:
        """Wait for the engine's first chunk before any header goes out, so what only the engine
        refuses (a schema or regex it cannot compile, a prompt past the context) still gets its
        4xx status instead of a 200 and an in-band error."""
        chunks = run_generation(self.engine, gen, self.limits.request_timeout_s)
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
            "model": self.engine.model_name,
        }
        want_logprobs = gen.sampling.logprobs is not None

        def frame(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

        def token_frame(chunk: GenerationChunk) -> str:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": chunk.text},
                "finish_reason": chunk.finish_reason,
            }
            if want_logprobs:
                choice["logprobs"] = _logprobs(list(chunk.logprobs)).model_dump()
            return frame([choice])

        held = frame(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        try:
            last = None
            async for last in _chained(first, chunks):
                held += token_frame(last)
                if last.finish_reason is None:  # the final chunk waits for usage and [DONE]
                    yield held
                    held = ""
            if req.stream_options and req.stream_options.include_usage and last is not None:
                held += frame([], usage=_usage(last).model_dump())
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


_ImageSlot = None  # marks where a decoded image goes back into a message's parts


def _parts(message: p.Message) -> list[str | None]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [message.content]
    return [part.text if isinstance(part, p.TextPart) else _ImageSlot for part in message.content]


def _canvas(plan: TilePlan, tiles: int | None) -> Need:
    """Held at the canvas the processor would resize to under this tile budget; handed over at
    that size, the image gets exactly that many tiles (see model/tiles.py)."""
    return Need(lambda size: plan.canvas(size, tiles), exact=True)


def _collect_parts(
    messages: list[p.Message],
) -> tuple[list[str], list[tuple[str, p.ImageURL]]]:
    """All texts, and every image URL with its parameter path (for error messages)."""
    texts: list[str] = []
    images: list[tuple[str, p.ImageURL]] = []
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            texts.append(m.content)
        for j, part in enumerate(m.content if isinstance(m.content, list) else []):
            if isinstance(part, p.TextPart):
                texts.append(part.text)
            else:
                images.append((f"messages[{i}].content[{j}].image_url.url", part.image_url))
    return texts, images


def _usage(chunk: GenerationChunk) -> p.Usage:
    return p.Usage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )


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
