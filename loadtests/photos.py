"""12-megapixel phone photos for load: what users really send, not the small crops of `images`.

Two kinds, both from scikit-image's astronaut (a real photograph, nothing downloaded), scaled up
to 4032×3024 (a 12 MP phone camera), with fine sensor-like grain so the JPEG (quality 90) weighs
about 2 MB as a phone's would (a smooth upscale alone compresses to half that):

- `chat_photo`: a 4:3 crop around the face, varied (crop, mirror, exposure), for chat requests;
- `faces_photo`: one astronaut portrait (~1500 px) centred on a neutral background (`one_face`),
  or two side by side (`two_faces`), for `/v1/faces/analyze`: the server's CenterFace detector
  finds exactly that many faces (tests/load/test_photos.py checks it).

Every index gives different pixels — a 40-bit stamp of the index in a corner guarantees it, and the
grain's offset differs within the faces too — so neither vLLM's multimodal cache (keyed on pixels)
nor any other cache can hit. The same index always gives the same bytes, so every system sees the
same load.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageOps

from loadtests.images import (
    FACE_BOX,
    ORIGINAL_SIDE,
    astronaut,
    crop_around_face,
    jpeg_data_url,
)

PhotoKind = Literal["chat", "one_face", "two_faces"]
PHOTO_SIZE = (4032, 3024)
QUALITY = 90
PORTRAIT_SIDE = 1500  # at full size; scaled with the photo
# Head and shoulders only: the whole 512² picture (flag, suit patches) adds clutter no face
# analysis needs; this crop keeps one clear face per portrait.
_PORTRAIT_BOX = (75, 0, 375, 300)
_GRAIN_TILE = (1024, 768)
_GRAIN_SIGMA = 3.0  # grey levels; makes a 4032×3024 JPEG at quality 90 weigh ≈ 2 MB
_STAMP_BITS = 40


@cache
def _grain_tile() -> Image.Image:
    """Gaussian luminance grain around 128, fixed seed: a tile, pasted at per-index offsets."""
    w, h = _GRAIN_TILE
    noise = np.random.default_rng(0).normal(128.0, _GRAIN_SIGMA, (h, w))
    return Image.fromarray(noise.round().clip(0, 255).astype(np.uint8), mode="L")


def _add_grain(image: Image.Image, index: int) -> Image.Image:
    """Tile the grain over the image from an offset that differs for nearby indices (a bijection
    over one tile's positions), so even the pixels inside a face differ from photo to photo."""
    tile = _grain_tile()
    w, h = tile.size
    k = index * 7919 % (w * h)  # 7919 is prime, coprime with 1024 × 768
    ox, oy = k % w, k // w
    grain = Image.new("L", image.size)
    for x in range(-ox, image.width, w):
        for y in range(-oy, image.height, h):
            grain.paste(tile, (x, y))
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def _stamp(image: Image.Image, index: int) -> None:
    """The index in binary, black and white squares at the bottom left: no two photos are equal."""
    if not 0 <= index < 2**_STAMP_BITS:
        raise ValueError(f"photo index out of range: {index}")
    block = max(2, image.width // 168)  # 24 px at full size
    draw = ImageDraw.Draw(image)
    top = image.height - 2 * block
    for bit in range(_STAMP_BITS):
        shade = 255 if index >> bit & 1 else 0
        left = block + bit * block
        draw.rectangle((left, top, left + block - 1, top + block - 1), fill=(shade,) * 3)


def chat_photo(index: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """A landscape photo of the astronaut: a varied 4:3 crop around the face, scaled up."""
    rng = random.Random(index)
    width = rng.randint(int(2.5 * FACE_BOX[2]), ORIGINAL_SIDE)
    image = crop_around_face(rng, width, width * 3 // 4)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image = _add_grain(image.resize(size, Image.Resampling.BILINEAR), index)
    _stamp(image, index)
    return image


def faces_photo(index: int, size: tuple[int, int] = PHOTO_SIZE, faces: int = 2) -> Image.Image:
    """One astronaut portrait centred on a grey background, or two, each centred in its half.

    What varies: background tint, mirroring, a little exposure, the grain and the stamp; the
    portraits keep their place and size, so every photo of a kind has the same faces to find.
    """
    if faces not in (1, 2):
        raise ValueError(f"one or two faces, not {faces}")
    rng = random.Random(index)
    width, height = size
    grey = rng.randint(100, 170)
    tint = (grey + rng.randint(-12, 12), grey, grey + rng.randint(-12, 12))
    image = Image.new("RGB", size, tint)
    side = round(PORTRAIT_SIDE * width / PHOTO_SIZE[0])
    slot = width // faces  # each portrait centred in its share of the width
    for i in range(faces):
        portrait = astronaut().crop(_PORTRAIT_BOX)
        if rng.random() < 0.5:
            portrait = ImageOps.mirror(portrait)
        portrait = ImageEnhance.Brightness(portrait).enhance(rng.uniform(0.9, 1.1))
        portrait = portrait.resize((side, side), Image.Resampling.BILINEAR)
        image.paste(portrait, (i * slot + (slot - side) // 2, (height - side) // 2))
    image = _add_grain(image, index)
    _stamp(image, index)
    return image


def one_face_photo(index: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    return faces_photo(index, size, faces=1)


def two_faces_photo(index: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    return faces_photo(index, size, faces=2)


PHOTOS: dict[PhotoKind, Callable[[int, tuple[int, int]], Image.Image]] = {
    "chat": chat_photo,
    "one_face": one_face_photo,
    "two_faces": two_faces_photo,
}


def photo_data_urls(
    kind: PhotoKind, count: int, start: int = 0, size: tuple[int, int] = PHOTO_SIZE
) -> list[str]:
    """`count` distinct JPEG data URLs of one kind, photos `start` … `start + count - 1`."""
    make = PHOTOS[kind]
    return [jpeg_data_url(make(i, size), QUALITY) for i in range(start, start + count)]
