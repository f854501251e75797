"""A deterministic in-memory engine for fast tests of the HTTP layer.

It honours the same contract as the vLLM engine — streaming chunks, structured outputs, usage,
logprobs, aborts — without a model: answers are a function of the request, so tests can assert them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from model.adapters import AdapterTable
from model.demo import DEMO_TILES
from model.engine import (
    Adapter,
    Engine,
    EngineAborted,
    EngineDeadError,
    EngineStats,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    StructuredOutput,
    TokenLogprob,
)
from model.tiles import TilePlan

Responder = Callable[[GenerationRequest], str]
# The tokens of an answer with their logprobs, as the engine would report them.
Tokenizer = Callable[[GenerationRequest], Sequence[TokenLogprob]]


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The first value a simple JSON schema admits (enums, objects, arrays, scalars)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(sub) for name, sub in props.items()}
    return {"array": [], "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)


def default_answer(request: GenerationRequest) -> str:
    structured = request.sampling.structured or StructuredOutput()
    if structured.json_schema is not None:
        return json.dumps(minimal_instance(structured.json_schema), separators=(",", ":"))
    if structured.json_object:
        return "{}"
    if structured.choice:
        return structured.choice[0]
    images = sum(not isinstance(p, str) for m in request.messages for p in m.parts)
    return f"fake answer with {images} image(s)"


class FakeEngine(Engine):
    """Emits its answer one whitespace-separated word per chunk, `step_delay_s` apart.

    `abort_after=n` makes every request end the way an engine-side abort does in the real engine
    (`EngineAborted`) after n chunks, 0 meaning before the first: a deterministic stand-in for
    vLLM's finish reason "abort".

    `tokens=f` replaces the words and their made-up logprobs with `f(request)`: answers whose
    token distributions a test knows exactly (for choice 0; others are words).

    With `n` > 1 the choices' words interleave, each chunk carrying its choice's `index`; choice
    i > 0 ends with " (choice i)".

    `stall()` holds every request before its next chunk until `resume()`: an engine that is alive
    and passes its health check but makes no progress, for the stall watchdog. `dead = True` is a
    dead one. LoRA adapters load when their directory declares a rank (`max_lora_rank=None`:
    LoRA off); requests record which one they named."""

    def __init__(
        self,
        model_name: str = "demo",
        responder: Responder = default_answer,
        step_delay_s: float = 0.0,
        tiles: TilePlan = DEMO_TILES,
        abort_after: int | None = None,
        max_lora_rank: int | None = 16,
        tokens: Tokenizer | None = None,
    ) -> None:
        self.model_name = model_name
        self.tiles = tiles
        self.responder = responder
        self.step_delay_s = step_delay_s
        self.abort_after = abort_after
        self.tokens = tokens
        self.started = False
        self.dead = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.requests: list[GenerationRequest] = []
        self._adapters = AdapterTable(model_name, max_rank=max_lora_rank)

    async def start(self) -> None:
        self.started = True

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        if self.dead:
            raise EngineDeadError("fake engine is dead")
        if request.adapter is not None:
            self._adapters.get(request.adapter)  # UnknownAdapter, as vLLM's engine raises it
        self.requests.append(request)
        self.running.add(request.request_id)
        try:
            async for chunk in self._chunks(request):
                yield chunk
        finally:
            if request.request_id in self.running:  # closed early: the caller went away
                self.running.discard(request.request_id)
                self.aborted.append(request.request_id)

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        budget = request.sampling.max_tokens
        prompt_tokens = sum(len(str(p).split()) for m in request.messages for p in m.parts)
        answers = [self._tokens(request, index) for index in range(request.sampling.n)]
        pieces = [tokens[:budget] for tokens in answers]
        # Choices take turns, one word each, as vLLM's batch advances them together.
        steps = [(i, k) for k in range(budget) for i in range(len(pieces)) if k < len(pieces[i])]
        for step, (index, k) in enumerate(steps, start=1):
            if self.step_delay_s:
                await asyncio.sleep(self.step_delay_s)
            if not self._flowing.is_set():
                await self._flowing.wait()
            if self.abort_after is not None and step > self.abort_after:
                self.running.discard(request.request_id)
                raise EngineAborted("the fake engine aborted the request")
            reason: FinishReason | None = None
            if k == len(pieces[index]) - 1:
                reason = "length" if len(answers[index]) > budget else "stop"
            if step == len(steps):
                self.running.discard(request.request_id)
            token, top = pieces[index][k], request.sampling.logprobs
            yield GenerationChunk(
                text=token.token,
                completion_tokens=k + 1,
                prompt_tokens=prompt_tokens,
                finish_reason=reason,
                logprobs=() if top is None else (replace(token, top=token.top[:top]),),
                index=index,
            )

    def _answer(self, request: GenerationRequest, index: int) -> str:
        """Choice 0 is the responder's answer; with n > 1, the others say which they are, so tests
        can tell them apart (unless constrained: every choice must then satisfy the constraint)."""
        answer = self.responder(request)
        if index == 0 or request.sampling.structured is not None:
            return answer
        return f"{answer} (choice {index})"

    def _tokens(self, request: GenerationRequest, index: int) -> list[TokenLogprob]:
        """One token per word (made-up logprobs), or those of `tokens` for choice 0."""
        if self.tokens is not None and index == 0:
            return list(self.tokens(request))
        words = self._answer(request, index).split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        return [TokenLogprob(piece, -0.5, ((piece, -0.5), (" ", -1.5))) for piece in pieces]

    async def abort(self, request_id: str) -> None:
        if request_id in self.running:
            self.running.discard(request_id)
            self.aborted.append(request_id)

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError("fake engine is dead")

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.running), waiting=0)

    @property
    def adapters(self) -> list[Adapter]:
        return self._adapters.adapters

    async def load_adapter(self, adapter: Adapter) -> None:
        self._adapters.add(adapter, self._adapters.admit(adapter))

    async def unload_adapter(self, name: str) -> None:
        self._adapters.remove(name)

    async def shutdown(self) -> None:
        self.started = False
