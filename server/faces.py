"""Faces service: image → detected faces → one structured engine request per face → answers.

FaceLLM was trained on FairFace face crops grown by 25 % each side, one tile each, so faces are
detected, cropped that way and resized to the model's tile rather than sending the whole scene.
A photo is decoded only as large as that needs (`FACE_IMAGE_SIDE`); boxes in the response are in
the coordinates of the image the client sent. The per-face requests are submitted together so
continuous batching serves them as one batch; every answer is validated before it is returned.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from functools import cache

from PIL import Image

from model import attributes as attrs
from model.detect import (
    Box,
    FaceDetector,
    face_view,
    preprocessing_stamp,
    scale_box,
    whole_image_box,
)
from model.engine import (
    ChatMessage,
    Engine,
    GenerationRequest,
    SamplingOptions,
    StructuredOutput,
)
from server import protocol as p
from server.errors import APIError, BadModelAnswer, InvalidRequest, Unprocessable, clipped, quoted
from server.generation import resolve_model, run_generation
from server.media import ImageLoader, LoadedImage, long_side
from server.metrics import Metrics

log = logging.getLogger(__name__)

TOKENS_PER_ATTRIBUTE = 24  # a key, a value and punctuation, with room for long enum values
# Face photos are held with at least this many pixels on the long side (a 12-MP JPEG decodes at
# half scale): detection works on a smaller copy, and crops keep a tile's worth of detail for any
# face larger than about a fifth of the photo's long side.
FACE_IMAGE_SIDE = 1920
_FACE_PHOTO = long_side(FACE_IMAGE_SIDE)


@dataclass(frozen=True)
class FaceLimits:
    max_faces: int
    request_timeout_s: float
    face_tiles: int = 1


@dataclass(frozen=True)
class PreparedFaces:
    """What `prepare` hands to `analyze`: the attributes asked for and the faces found."""

    names: tuple[str, ...]
    boxes: list[Box]  # in the coordinates of the image the client sent
    views: list[Image.Image]  # each face as the model sees it; the photo itself is not kept
    adapter: str | None = None  # the LoRA adapter that answers; None: the base model


@cache
def _task(names: tuple[str, ...]) -> tuple[str, StructuredOutput]:
    """Prompt and constraint for a set of attributes, built once per set (schemas compile once)."""
    return attrs.prompt(names), StructuredOutput(json_schema=attrs.json_schema(names))


class FacesService:
    def __init__(
        self,
        engine: Engine,
        policy: attrs.AttributePolicy,
        detector: FaceDetector,
        images: ImageLoader,
        limits: FaceLimits,
        metrics: Metrics,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.detector = detector
        self.images = images
        self.limits = limits
        self.metrics = metrics

    def schema(self) -> dict[str, object]:
        return attrs.json_schema(self.policy.enabled)

    async def prepare(self, req: p.FaceAnalysisRequest) -> PreparedFaces:
        """Validate, decode, detect and crop: everything before the engine, off the loop."""
        adapter = resolve_model(req.model, self.engine)
        try:
            names = self.policy.select(req.attributes)
        except attrs.AttributeNotServed as e:
            raise _not_served(e) from None
        photo = await self.images.load(req.image, "image", _FACE_PHOTO, raw_base64=True)
        max_faces = min(req.max_faces or self.limits.max_faces, self.limits.max_faces)
        boxes, views = await asyncio.to_thread(self._cut, photo, req.detect, max_faces)
        if not boxes:
            raise Unprocessable(
                "No face was detected in the image; send a face image, or "
                "detect=false to analyse the whole image as one face.",
                param="image",
                code="no_face_detected",
            )
        return PreparedFaces(names, boxes, views, adapter)

    def _cut(
        self, photo: LoadedImage, detect: bool, max_faces: int
    ) -> tuple[list[Box], list[Image.Image]]:
        """Faces found (or the whole image), in the client's coordinates, and their views."""
        held = photo.image
        boxes = self.detector.detect(held, max_faces) if detect else [whole_image_box(held)]
        views = [face_view(held, b, self.engine.tiles, self.limits.face_tiles) for b in boxes]
        return [scale_box(b, held.size, photo.original) for b in boxes], views

    async def analyze(self, job: PreparedFaces) -> p.FaceAnalysis:
        boxes = job.boxes
        self.metrics.faces_per_image.observe(len(boxes))
        request_id = f"faces-{uuid.uuid4().hex}"
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._answer(f"{request_id}-{i}", crop, job))
                    for i, crop in enumerate(job.views)
                ]
        except* APIError as failures:
            raise failures.exceptions[0] from None
        faces, usage = [], p.Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        for box, task in zip(boxes, tasks, strict=True):
            answer, face_usage = task.result()
            faces.append(
                p.Face(
                    bbox=p.BoundingBox(x=box.x, y=box.y, w=box.w, h=box.h),
                    score=box.score,
                    attributes=answer,
                )
            )
            usage = _add(usage, face_usage)
        return p.FaceAnalysis(
            id=request_id,
            model=job.adapter or self.engine.model_name,
            faces=faces,
            usage=usage,
            versions=p.Versions(
                model=self.engine.model_name,
                adapter=job.adapter,
                prompt=attrs.PROMPT_VERSION,
                schema=attrs.SCHEMA_VERSION,
                preprocessing=preprocessing_stamp(self.engine.tiles, self.limits.face_tiles),
            ),
        )

    async def _answer(
        self, request_id: str, crop: Image.Image, job: PreparedFaces
    ) -> tuple[dict[str, str], p.Usage]:
        names = job.names
        prompt, constraint = _task(names)
        request = GenerationRequest(
            request_id=request_id,
            messages=(ChatMessage(role="user", parts=(crop, prompt)),),
            sampling=SamplingOptions(
                max_tokens=TOKENS_PER_ATTRIBUTE * len(names) + 8,
                temperature=0.0,
                structured=constraint,
            ),
            adapter=job.adapter,
        )
        text, prompt_tokens, completion_tokens = [], 0, 0
        async for chunk in run_generation(self.engine, request, self.limits.request_timeout_s):
            text.append(chunk.text)
            prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
        try:
            answer = attrs.parse_answer("".join(text), names)
        except attrs.InvalidAnswer as e:
            self.metrics.validation_failures.inc()
            log.warning("invalid structured answer for %s: %s", request_id, e)
            raise BadModelAnswer(
                "The model's answer for a face did not validate against the attribute schema.",
                code="invalid_model_answer",
            ) from None
        return answer, p.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


def _not_served(e: attrs.AttributeNotServed) -> InvalidRequest:
    """The refusal in our words, the caller's attribute name quoted only as far as `quoted`
    allows (the exception's own text would carry it whole)."""
    if e.name == "attributes":  # the selection as a whole, e.g. empty
        return InvalidRequest(
            f"Attribute not served: {e.reason}.", param="attributes", code="attribute_not_served"
        )
    return InvalidRequest(
        f"Attribute not served: {quoted(e.name)}: {e.reason}.",
        param=f"attributes.{clipped(e.name)}",
        code="attribute_not_served",
    )


def _add(a: p.Usage, b: p.Usage) -> p.Usage:
    return p.Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
    )
