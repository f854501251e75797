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
