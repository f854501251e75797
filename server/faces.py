"""Faces service: image → detected faces → one question per face and attribute → answers.

FaceLLM was trained on FairFace face crops grown by 25 % each side, one tile each, so faces are
detected, cropped that way and resized to the model's tile rather than sending the whole scene.
A photo is decoded only as large as that needs (`FACE_IMAGE_SIDE`); boxes and landmarks in the
response are in the coordinates of the image the client sent. Every face's questions are
submitted together, so continuous batching serves them as one batch (server/answers.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from model import attributes as attrs
from model.detect import (
    LANDMARK_NAMES,
    Box,
    FaceDetector,
    face_view,
    preprocessing_stamp,
    scale_box,
    whole_image_box,
)
from model.engine import Engine
from server import protocol as p
from server.answers import FaceAnswerer, Question, first_error
from server.errors import APIError, InvalidRequest, Unprocessable, clipped, quoted
from server.generation import resolve_model
from server.media import ImageLoader, LoadedImage, long_side
from server.metrics import Metrics
from server.watchdog import EngineMonitor

log = logging.getLogger(__name__)

# Face photos are held with at least this many pixels on the long side (a 12-MP JPEG decodes at
# half scale): detection works on a smaller copy, and crops keep a tile's worth of detail for any
# face larger than about a fifth of the photo's long side.
FACE_IMAGE_SIDE = 1920
_FACE_PHOTO = long_side(FACE_IMAGE_SIDE)


@dataclass(frozen=True)
class FaceOptions:
    """What the settings decide for face analysis (see the same-named settings)."""

    max_faces: int
    request_timeout_s: float
    face_tiles: int
    min_confidence: Mapping[str, float]  # default thresholds


@dataclass(frozen=True)
class FaceJob:
    """What `prepare` hands to `analyze`: what is asked, and the faces found."""

    question: Question
    boxes: list[Box]  # in the coordinates of the image the client sent
    views: list[Image.Image]  # each face as the model sees it; the photo itself is not kept


class FacesService:
    def __init__(
        self,
        engine: Engine,
        monitor: EngineMonitor,
        policy: attrs.AttributePolicy,
        detector: FaceDetector,
        images: ImageLoader,
        options: FaceOptions,
        metrics: Metrics,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.detector = detector
        self.images = images
        self.options = options
        self.metrics = metrics
        self.answerer = FaceAnswerer(engine, monitor, metrics, options.request_timeout_s)

    def schema(self) -> dict[str, object]:
        return attrs.json_schema(self.policy.enabled)

    async def prepare(self, req: p.FaceAnalysisRequest) -> FaceJob:
        """Validate, decode, detect and crop: everything before the engine, off the loop."""
        adapter = resolve_model(req.model, self.engine)
        try:
            names = self.policy.select(req.attributes)
        except attrs.AttributeNotServed as e:
            raise _not_served(e) from None
        thresholds = self._thresholds(req.min_confidence, names)
        photo = await self.images.load(req.image, "image", _FACE_PHOTO, raw_base64=True)
        max_faces = min(req.max_faces or self.options.max_faces, self.options.max_faces)
        boxes, views = await asyncio.to_thread(self._cut, photo, req.detect, max_faces)
        if not boxes:
            raise Unprocessable(
                "No face was detected in the image; send a face image, or "
                "detect=false to analyse the whole image as one face.",
                param="image",
                code="no_face_detected",
            )
        question = Question(names, adapter, thresholds, req.confidence)
        return FaceJob(question, boxes, views)

    def _cut(
        self, photo: LoadedImage, detect: bool, max_faces: int
    ) -> tuple[list[Box], list[Image.Image]]:
        """Faces found (or the whole image), in the client's coordinates, and their views."""
        held = photo.image
        if detect:
            with self.metrics.face_detection.time():
                boxes = self.detector.detect(held, max_faces)
        else:
            boxes = [whole_image_box(held)]
        views = [face_view(held, b, self.engine.tiles, self.options.face_tiles) for b in boxes]
        return [scale_box(b, held.size, photo.original) for b in boxes], views

    async def analyze(self, job: FaceJob) -> p.FaceAnalysis:
        boxes = job.boxes
        self.metrics.faces_per_image.observe(len(boxes))
        request_id = f"faces-{uuid.uuid4().hex}"
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self.answerer.answer(f"{request_id}-{i}", crop, job.question))
                    for i, crop in enumerate(job.views)
                ]
        except* APIError as failures:
            raise first_error(failures) from None
        faces, usage = [], p.Usage()
        for box, task in zip(boxes, tasks, strict=True):
            answer, face_usage = task.result()
            faces.append(
                p.Face(
                    bbox=p.BoundingBox(x=box.x, y=box.y, w=box.w, h=box.h),
                    score=box.score,
                    landmarks=_landmarks(box),
                    attributes=answer,
                )
            )
            usage += face_usage
        return p.FaceAnalysis(
            id=request_id,
            model=job.question.adapter or self.engine.model_name,
            faces=faces,
            usage=usage,
            versions=p.Versions(
                model=self.engine.model_name,
                adapter=job.question.adapter,
                prompt=attrs.PROMPT_VERSION,
                schema=attrs.SCHEMA_VERSION,
                preprocessing=preprocessing_stamp(self.engine.tiles, self.options.face_tiles),
            ),
        )

    def _thresholds(
        self, given: float | dict[str, float] | None, names: tuple[str, ...]
    ) -> dict[str, float]:
        """The abstention threshold of each attribute asked for (only those above 0): the
        request's, else the server's default."""
        if isinstance(given, dict):
            for name in given:
                if name not in names:
                    raise InvalidRequest(
                        f"min_confidence names {quoted(name)}, which is not among the "
                        "attributes asked for.",
                        param=f"min_confidence.{clipped(name)}",
                        code="invalid_value",
                    )
            merged = {**self.options.min_confidence, **given}
        elif given is not None:
            merged = dict.fromkeys(names, given)
        else:
            merged = dict(self.options.min_confidence)
        return {name: merged[name] for name in names if merged.get(name, 0.0) > 0}


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


def _landmarks(box: Box) -> p.Landmarks | None:
    if len(box.landmarks) != len(LANDMARK_NAMES):
        return None
    points = {
        n: p.Point(x=round(pt.x, 1), y=round(pt.y, 1))
        for n, pt in zip(LANDMARK_NAMES, box.landmarks, strict=True)
    }
    return p.Landmarks(**points)
