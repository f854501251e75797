"""One face's answers: one multiple-choice question per attribute, all asked at once.

Each attribute is asked as FaceXBench asks its questions (model/questions.py) and answered with
the option's letter under a `choice` constraint: one decoding step per attribute. A face's
questions go to the engine together, the crop first and the question last, so they share their
prompt up to the question and vLLM's prefix and encoder caches compute the image once per face.
With confidences, that one step's masked logprobs are the whole distribution
(model/confidence.py): no second pass, and greedy decoding already picks the most probable value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from PIL import Image

from model import attributes as attrs
from model.confidence import Scored, UnscorableAnswer, abstain, score_choice
from model.engine import (
    ChatMessage,
    Engine,
    GenerationRequest,
    SamplingOptions,
    StructuredOutput,
    TokenLogprob,
)
from model.questions import LETTERS, NotAnOption
from server import protocol as p
from server.errors import APIError, BadModelAnswer, InternalError
from server.generation import run_generation
from server.metrics import Metrics
from server.watchdog import EngineMonitor

log = logging.getLogger(__name__)

# Alternatives asked for per answer: one per option, so the logprobs hold every option's.
CONFIDENCE_LOGPROBS = len(LETTERS)

Attributes = dict[str, str] | dict[str, p.AttributeAnswer]


@dataclass(frozen=True)
class Question:
    """What is asked of every face of one request."""

    names: tuple[str, ...]
    adapter: str | None = None  # the LoRA adapter that answers; None: the base model
    thresholds: Mapping[str, float] = field(default_factory=dict)  # abstain below; only > 0
    detailed: bool = False  # each attribute as {value, confidence, abstained, alternatives}
    priority: int = 0  # the engine's: batch lines ask at a larger number (served later)

    @property
    def scored(self) -> bool:
        """Whether answers need their confidences (to show them, or to abstain)."""
        return self.detailed or bool(self.thresholds)


@dataclass(frozen=True)
class _Reply:
    """One question's answer: the value, its logprobs (when asked for) and what it cost."""

    value: str
    token: TokenLogprob | None
    usage: p.Usage


class FaceAnswerer:
    def __init__(
        self, engine: Engine, monitor: EngineMonitor, metrics: Metrics, request_timeout_s: float
    ) -> None:
        self.engine = engine
        self.monitor = monitor
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s

    async def answer(
        self, request_id: str, crop: Image.Image, question: Question
    ) -> tuple[Attributes, p.Usage]:
        try:
            async with asyncio.TaskGroup() as group:
                asked = {
                    name: group.create_task(self._ask(f"{request_id}-{name}", crop, name, question))
                    for name in question.names
                }
        except* APIError as failures:
            raise first_error(failures) from None
        replies = {name: task.result() for name, task in asked.items()}
        usage = sum((reply.usage for reply in replies.values()), p.Usage())
        if not question.scored:
            return {name: reply.value for name, reply in replies.items()}, usage
        decided = {
            name: self._decided(name, self._scored(name, reply), question)
            for name, reply in replies.items()
        }
        if not question.detailed:
            return {name: scored.value for name, (scored, _) in decided.items()}, usage
        return {name: _detailed(*outcome) for name, outcome in decided.items()}, usage

    async def _ask(
        self, request_id: str, crop: Image.Image, name: str, question: Question
    ) -> _Reply:
        """One engine request: the crop, the attribute's question, one constrained letter."""
        choice = attrs.multiple_choice(name)
        request = GenerationRequest(
            request_id=request_id,
            messages=(ChatMessage(role="user", parts=(crop, choice.prompt())),),
            sampling=SamplingOptions(
                max_tokens=1,
                temperature=0.0,
                structured=StructuredOutput(choice=choice.letters),
                logprobs=CONFIDENCE_LOGPROBS if question.scored else None,
            ),
            adapter=question.adapter,
            priority=question.priority,
        )
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        usage = p.Usage()
        async for chunk in run_generation(
            self.engine, self.monitor, request, self.request_timeout_s
        ):
            text.append(chunk.text)
            tokens.extend(chunk.logprobs)
            usage = p.Usage.of(chunk.prompt_tokens, chunk.completion_tokens)
        try:
            value = attrs.attribute(name).values[choice.index("".join(text))]
        except NotAnOption as e:
            self.metrics.validation_failures.inc()
            log.warning("invalid answer for %s: %s", request_id, e)
            raise BadModelAnswer(
                "The model's answer for a face was not one of the options.",
                code="invalid_model_answer",
            ) from None
        return _Reply(value, tokens[0] if tokens else None, usage)

    def _scored(self, name: str, reply: _Reply) -> Scored:
        choice = attrs.multiple_choice(name)
        try:
            values = attrs.attribute(name).values
            return score_choice(reply.token, choice.letters, values, reply.value)
        except UnscorableAnswer as e:  # the engine sent no usable logprobs: ours
            log.error("cannot score the answer for %s: %s", name, e)
            raise InternalError("The model's confidences could not be computed.") from None

    def _decided(self, name: str, pick: Scored, question: Question) -> tuple[Scored, bool]:
        """The pick, or its abstain value (counted) when the pick fell below the attribute's
        threshold; with whether it abstained."""
        fallback = attrs.attribute(name).abstain
        if pick.confidence < question.thresholds.get(name, 0.0) and pick.value != fallback:
            self.metrics.abstentions.labels(name).inc()
            return abstain(pick, fallback), True
        return pick, False


def first_error(failures: BaseExceptionGroup[APIError]) -> APIError:
    """The first API error in a (possibly nested) group of failed tasks."""
    first: BaseException = failures
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, APIError)
    return first


def _detailed(scored: Scored, abstained: bool) -> p.AttributeAnswer:
    return p.AttributeAnswer(
        value=scored.value,
        confidence=scored.confidence,
        abstained=abstained,
        alternatives=[p.Alternative(value=v, confidence=c) for v, c in scored.alternatives],
    )
