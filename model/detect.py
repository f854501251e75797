"""Face detection and FairFace-style cropping.

FaceLLM was fine-tuned on FairFace `margin025` crops (the face box grown by 25 % on each side,
224 px, one model tile), so faces are cut out the same way and resized to the model's tile before
they reach it (`face_view`): a crop sent at its cut size would be tiled like a scene, ten times the
prefill and outside the training distribution. Detection runs in a worker thread
(`asyncio.to_thread`); OpenCV's detectors keep per-call state, so each one is guarded by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
from PIL import Image

from model.tiles import Size, TilePlan

DetectorKind = Literal["haar", "yunet"]

FACE_MARGIN = 0.25  # FairFace margin025
# Bump when the way a face reaches the model changes; the faces response names it.
PREPROCESSING_VERSION = "2"

# Large photos are scaled down before detection: the cost grows with pixels (Haar on a 12-MP photo,
# 2 cores: ≈ 210 ms at 1280 px, ≈ 125 ms at 960), and a face under 1/30 of the long side (32 px
# here) is too small for the model to describe anyway.
DETECT_MAX_SIDE = 960


@dataclass(frozen=True)
class Box:
    """A face box in image pixels; `score` is the detector's confidence (higher is surer)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0


class FaceDetector(Protocol):
    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        """Faces in an RGB image, largest first, at most `max_faces`."""
        ...


def _largest_first(boxes: list[Box], max_faces: int) -> list[Box]:
    if max_faces < 1:
        raise ValueError(f"max_faces must be at least 1, got {max_faces}")
    ordered = sorted(boxes, key=lambda b: (-b.w * b.h, -b.score, b.y, b.x))
    return ordered[:max_faces]


def _detection_array(image: Image.Image) -> tuple[np.ndarray, float]:
    """The image as RGB, at most DETECT_MAX_SIDE pixels a side, and the factor back to full size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = max(rgb.size) / DETECT_MAX_SIDE
    if scale > 1:
        size = (max(1, round(rgb.width / scale)), max(1, round(rgb.height / scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb), max(scale, 1.0)


def _to_box(rect: Sequence[float], score: float, scale: float, image: Image.Image) -> Box | None:
    """Scale back to full size and clip to the image; None when nothing is left."""
    x, y, w, h = (float(v) * scale for v in rect[:4])
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(image.width, round(x + w)), min(image.height, round(y + h))
    if right <= left or bottom <= top:
        return None
    return Box(left, top, right - left, bottom - top, float(score))


class HaarDetector:
    """OpenCV's bundled frontal-face Haar cascade: no model file needed, frontal faces only."""

    def __init__(
        self, min_size: int = 32, scale_factor: float = 1.1, min_neighbors: int = 5
    ) -> None:
        cascades = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        path = cascades / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade from {path}")
        self._min_size = min_size
        self._scale_factor = scale_factor
        self._min_neighbors = min_neighbors
        self._lock = threading.Lock()

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        array, scale = _detection_array(image)
        gray = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
        size = (self._min_size, self._min_size)
        with self._lock:
            rects, neighbours = self._cascade.detectMultiScale2(
                gray, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors, minSize=size
            )
        found = (
            _to_box(rect, float(n), scale, image) for rect, n in zip(rects, neighbours, strict=True)
        )
        return _largest_first([b for b in found if b is not None], max_faces)


class YuNetDetector:
    """OpenCV's YuNet CNN detector (`face_detection_yunet_*.onnx`): better with pose and scale."""

    def __init__(
        self, model_path: Path, score_threshold: float = 0.7, nms_threshold: float = 0.3
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {model_path}")
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), score_threshold, nms_threshold
            )
        except cv2.error as exc:
            raise ValueError(f"could not load YuNet model {model_path}: {exc.msg}") from None
        self._lock = threading.Lock()

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        array, scale = _detection_array(image)
        bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self._net.detect(bgr)
        rows = [] if faces is None else faces
        # Each row: x, y, w, h, five landmark points, score.
        found = (_to_box(row, float(row[-1]), scale, image) for row in rows)
        return _largest_first([b for b in found if b is not None], max_faces)


def make_detector(kind: DetectorKind, yunet_model_path: Path | None = None) -> FaceDetector:
    """The detector the settings ask for; fails at startup, not on the first request."""
    if kind == "haar":
        return HaarDetector()
    if kind == "yunet":
        if yunet_model_path is None:
            raise ValueError("face detector 'yunet' needs a model path (yunet_model_path)")
        return YuNetDetector(yunet_model_path)
    raise ValueError(f"unknown face detector {kind!r}; use 'haar' or 'yunet'")


def whole_image_box(image: Image.Image) -> Box:
    """The box covering the whole image: the caller says the image already is one face."""
    return Box(0, 0, image.width, image.height, 1.0)


def crop_face(image: Image.Image, box: Box, margin: float = FACE_MARGIN) -> Image.Image:
    """Grow the box by `margin` of its width left and right and of its height top and bottom
    (FairFace margin025), clipped to the image."""
    dx, dy = int(box.w * margin + 0.5), int(box.h * margin + 0.5)  # half rounds up
    left, top = max(0, box.x - dx), max(0, box.y - dy)
    right = min(image.width, box.x + box.w + dx)
    bottom = min(image.height, box.y + box.h + dy)
    if right <= left or bottom <= top:
        raise ValueError(f"face box {box} lies outside the {image.width}x{image.height} image")
    return image.crop((left, top, right, bottom))


def face_view(image: Image.Image, box: Box, plan: TilePlan, tiles: int = 1) -> Image.Image:
    """The face as FaceLLM was trained to see it: the margin crop, resized to the canvas of
    `tiles` tiles (one tile: exactly the model's tile size), whatever size it was cut at."""
    crop = crop_face(image, box)
    canvas = plan.canvas(crop.size, tiles)
    return crop if crop.size == canvas else crop.resize(canvas, Image.Resampling.BICUBIC)


def scale_box(box: Box, source: Size, target: Size) -> Box:
    """A box on an image of size `source`, in the coordinates of the same image at `target`."""
    if source == target:
        return box
    sx, sy = target[0] / source[0], target[1] / source[1]
    left, top = round(box.x * sx), round(box.y * sy)
    right = min(target[0], round((box.x + box.w) * sx))
    bottom = min(target[1], round((box.y + box.h) * sy))
    return Box(left, top, max(1, right - left), max(1, bottom - top), box.score)


def preprocessing_stamp(plan: TilePlan, tiles: int) -> str:
    """What the faces response's `versions.preprocessing` says: enough to reproduce the view."""
    width, height = plan.tile
    return f"v{PREPROCESSING_VERSION}:margin={FACE_MARGIN:g},tile={width}x{height},tiles={tiles}"
