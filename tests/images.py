"""Test images, made offline from scikit-image's bundled photos (no downloads)."""

from __future__ import annotations

import base64
import io
from functools import cache

from PIL import Image
from skimage import data


@cache
def astronaut() -> Image.Image:
    """A real portrait (public-domain NASA photo), 512×512, one face at x=177 y=66 w=95 h=95."""
    return Image.fromarray(data.astronaut())


@cache
def cameraman() -> Image.Image:
    """A real photo (scikit-image's `camera`, 512×512) of a man in three-quarter view, turned
    towards a camera: one face at about x=198 y=115 w=58 h=84."""
    return Image.fromarray(data.camera()).convert("RGB")


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """`image` turned by `degrees` (counter-clockwise) about its centre, corners filled white."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor="white")


@cache
def group_photo() -> Image.Image:
    """Four real faces on one 1500×420 canvas, each about a twentieth of its width: the
    astronaut upright and tilted ±30°, and the cameraman in three-quarter view (GROUP_FACES)."""
    canvas = Image.new("RGB", (1500, 420), (200, 200, 200))
    for i, degrees in enumerate((0, 30, -30)):
        canvas.paste(rotated(astronaut(), degrees).resize((400, 400)), (i * 400, 10))
    canvas.paste(cameraman().crop((120, 60, 420, 360)), (1200, 60))
    return canvas


# Where the faces of `group_photo` are (x, y, w, h), checked by eye.
GROUP_FACES = (
    (144, 61, 69, 84),
    (484, 91, 76, 84),
    (994, 55, 85, 93),
    (1285, 119, 65, 88),
)


@cache
def cat() -> Image.Image:
    """No human face."""
    return Image.fromarray(data.chelsea())


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def data_url(image: Image.Image, fmt: str = "JPEG") -> str:
    mime = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}[fmt]
    return f"data:image/{mime};base64,{base64.b64encode(encode(image, fmt)).decode()}"


def image_message(url: str, text: str = "Describe this face.") -> list[dict[str, object]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        }
    ]


@cache
def two_faces() -> Image.Image:
    """Two astronaut portraits side by side at 400 px (Haar finds exactly these two faces)."""
    face = astronaut().resize((400, 400))
    canvas = Image.new("RGB", (820, 420), "white")
    canvas.paste(face, (0, 10))
    canvas.paste(face.resize((360, 360)), (430, 30))
    return canvas


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


TRUE_ASTRONAUT_FACE = (177, 66, 95, 95)
