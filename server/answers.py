"""One face's answer: the engine request, validation, and — when asked — confidences and
abstention (the definition is in model/confidence.py).

Token-greedy decoding can end at a value the model found less probable than another: where
values share leading tokens ("3-9" and "30-39" both start "3"), the shared token's mass is split
only after it was chosen. So an answer with confidences is decoded in passes: when an attribute's
pick is not its most probable value, that value is fixed, and the attributes after it are decoded
again, continuing the answer from there. Each pass settles at least one more attribute; a trained
model rarely needs a second (the random demo model needs several: its greedy path is a poor
guide). `max_passes` bounds them; with 1, picks stand as decoded but for the last attribute's,
which conditions nothing and so is replaced without a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from PIL import Image

from model import attributes as attrs
from model.confidence import Scored, UnscorableAnswer, abstain, most_probable, score_answer
from model.engine import (
    ChatMessage,
    Engine,
    GenerationRequest,
    SamplingOptions,
    StructuredOutput,
    TokenLogprob,
)
from server import protocol as p
from server.errors import BadModelAnswer, InternalError
from server.generation import run_generation
from server.metrics import Metrics
from server.watchdog import EngineMonitor

log = logging.getLogger(__name__)

TOKENS_PER_ATTRIBUTE = 24  # a key, a value and punctuation, with room for long enum values
# Alternatives per token when confidences are wanted: vLLM's default cap (max_logprobs), more
# than any attribute has values.
CONFIDENCE_LOGPROBS = 20

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
class _Pass:
    text: str
    tokens: list[TokenLogprob]
    usage: p.Usage


@cache
def _task(names: tuple[str, ...]) -> tuple[str, StructuredOutput]:
    """Prompt and constraint for a set of attributes, built once per set (schemas compile once)."""
    return attrs.prompt(names), StructuredOutput(json_schema=attrs.json_schema(names))


class FaceAnswerer:
    def __init__(
        self,
        engine: Engine,
        monitor: EngineMonitor,
        metrics: Metrics,
        request_timeout_s: float,
        max_passes: int = 9,
    ) -> None:
        self.engine = engine
        self.monitor = monitor
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.max_passes = max_passes  # decoding passes per face with confidences (see above)

    async def answer(
        self, request_id: str, crop: Image.Image, question: Question
    ) -> tuple[Attributes, p.Usage]:
        if not question.scored:
            done = await self._pass(request_id, crop, question, {})
            return self._validated(done.text, question.names, request_id), done.usage
        scored, usage = await self._scored(request_id, crop, question)
        decided = {name: self._decided(name, pick, question) for name, pick in scored.items()}
        if not question.detailed:
            return {name: pick.value for name, (pick, _) in decided.items()}, usage
        return {name: _detailed(*outcome) for name, outcome in decided.items()}, usage

    async def _scored(
        self, request_id: str, crop: Image.Image, question: Question
    ) -> tuple[dict[str, Scored], p.Usage]:
        """Each attribute's most probable value with its confidence, decoded in passes (see the
        module's docstring): at most one per attribute, and `max_passes`; in the last one, the
        picks stand as decoded, but for the last attribute's."""
        fixed: dict[str, Scored] = {}
        usage = p.Usage()
        passes = min(len(question.names), self.max_passes)
        for attempt in range(passes):
            prefix = {name: pick.value for name, pick in fixed.items()}
            done = await self._pass(f"{request_id}-{attempt}", crop, question, prefix)
            usage += done.usage
            rest = [name for name in question.names if name not in fixed]
            spelled = attrs.answer_prefix(prefix) if prefix else ""
            answer = self._validated(spelled + done.text, question.names, request_id)
            tokens = [TokenLogprob(spelled, 0.0), *done.tokens] if prefix else done.tokens
            scored = _scores(tokens, {name: answer[name] for name in rest}, request_id)
            another_pass = attempt < passes - 1
            for name in rest:
                # The last attribute conditions nothing: its pick is replaced without a pass.
                may_replace = another_pass or name == rest[-1]
                fixed[name] = best = most_probable(scored[name]) if may_replace else scored[name]
                if best.value != scored[name].value:
                    break  # the attributes after it were conditioned on another value
            if len(fixed) == len(question.names):
                break
        return fixed, usage

    async def _pass(
        self, request_id: str, crop: Image.Image, question: Question, prefix: dict[str, str]
    ) -> _Pass:
        """One engine request: the whole answer, or its rest after the attributes `prefix`."""
        prompt, constraint = _task(question.names)
        rest = [name for name in question.names if name not in prefix]
        if prefix:  # the answer continues: the rest of the object, in the schema's order
            constraint = StructuredOutput(regex=attrs.continuation_pattern(rest))
        request = GenerationRequest(
            request_id=request_id,
            messages=(ChatMessage(role="user", parts=(crop, prompt)),),
            sampling=SamplingOptions(
                max_tokens=TOKENS_PER_ATTRIBUTE * len(rest) + 8,
                temperature=0.0,
                structured=constraint,
                logprobs=CONFIDENCE_LOGPROBS if question.scored else None,
            ),
            adapter=question.adapter,
            answer_prefix=attrs.answer_prefix(prefix) if prefix else "",
            priority=question.priority,
        )
        text: list[str] = []
        tokens: list[TokenLogprob] = []
        prompt_tokens = completion_tokens = 0
        async for chunk in run_generation(
            self.engine, self.monitor, request, self.request_timeout_s
        ):
            text.append(chunk.text)
            tokens.extend(chunk.logprobs)
            prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
        return _Pass("".join(text), tokens, p.Usage.of(prompt_tokens, completion_tokens))

    def _validated(self, text: str, names: tuple[str, ...], request_id: str) -> dict[str, str]:
        try:
            return attrs.parse_answer(text, names)
        except attrs.InvalidAnswer as e:
            self.metrics.validation_failures.inc()
            log.warning("invalid structured answer for %s: %s", request_id, e)
            raise BadModelAnswer(
                "The model's answer for a face did not validate against the attribute schema.",
                code="invalid_model_answer",
            ) from None

    def _decided(self, name: str, pick: Scored, question: Question) -> tuple[Scored, bool]:
        """The pick, or its abstain value (counted) when the pick fell below the attribute's
        threshold; with whether it abstained."""
        fallback = attrs.attribute(name).abstain
        if pick.confidence < question.thresholds.get(name, 0.0) and pick.value != fallback:
            self.metrics.abstentions.labels(name).inc()
            return abstain(pick, fallback), True
        return pick, False


def _scores(
    tokens: list[TokenLogprob], answer: dict[str, str], request_id: str
) -> dict[str, Scored]:
    values = {name: attrs.attribute(name).values for name in answer}
    try:
        return score_answer(tokens, answer, values)
    except UnscorableAnswer as e:  # the engine sent no logprobs that spell the answer: ours
        log.error("cannot score the answer of %s: %s", request_id, e)
        raise InternalError("The model's confidences could not be computed.") from None


def _detailed(scored: Scored, abstained: bool) -> p.AttributeAnswer:
    return p.AttributeAnswer(
        value=scored.value,
        confidence=scored.confidence,
        abstained=abstained,
        alternatives=[p.Alternative(value=v, confidence=c) for v, c in scored.alternatives],
    )
