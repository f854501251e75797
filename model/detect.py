"""Faces as FaceLLM was trained to see them: boxes, landmarks and FairFace-style crops.

FaceLLM was fine-tuned on FairFace `margin025` crops (a square face box grown by 25 % on each
side, 224 px, one model tile), so faces are cut out the same way and resized to the model's tile
before they reach it (`face_view`): a crop sent at its cut size would be tiled like a scene, ten
times the prefill and outside the training distribution. The detectors are in
model/detectors.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from PIL import Image

from model.tiles import Size, TilePlan

FACE_MARGIN = 0.25  # FairFace margin025
# Bump when the way a face reaches the model changes; the faces response names it.
# 3: square crops around the detector's box (CenterFace boxes are taller than wide).
PREPROCESSING_VERSION = "3"
# The five landmarks, in the detectors' order: as they appear in the image, left to right.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class Point(NamedTuple):
    x: float
    y: float


@dataclass(frozen=True)
class Box:
    """A face box in image pixels; `score` is the detector's probability that it is a face;
    `landmarks` the five points of LANDMARK_NAMES, or none when the detector gives none."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    landmarks: tuple[Point, ...] = ()


class FaceDetector(Protocol):
    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        """Faces in an RGB image, largest first, at most `max_faces`."""
        ...


def largest_first(boxes: list[Box], max_faces: int) -> list[Box]:
    if max_faces < 1:
        raise ValueError(f"max_faces must be at least 1, got {max_faces}")
    ordered = sorted(boxes, key=lambda b: (-b.w * b.h, -b.score, b.y, b.x))
    return ordered[:max_faces]


def whole_image_box(image: Image.Image) -> Box:
    """The box covering the whole image: the caller says the image already is one face."""
    return Box(0, 0, image.width, image.height, 1.0)


def crop_face(image: Image.Image, box: Box, margin: float = FACE_MARGIN) -> Image.Image:
    """A square around the box's centre, its side the box's longer side grown by `margin` on each
    side (FairFace margin025 on its square boxes), clipped to the image."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right = min(image.width, round(cx + side / 2))
    bottom = min(image.height, round(cy + side / 2))
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
    points = tuple(Point(p.x * sx, p.y * sy) for p in box.landmarks)
    return Box(left, top, max(1, right - left), max(1, bottom - top), box.score, points)


def preprocessing_stamp(plan: TilePlan, tiles: int) -> str:
    """What the faces response's `versions.preprocessing` says: enough to reproduce the view."""
    width, height = plan.tile
    return f"v{PREPROCESSING_VERSION}:margin={FACE_MARGIN:g},tile={width}x{height},tiles={tiles}"
