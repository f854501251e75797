"""Decoding to need: a photo is decoded only as large as its use, and the model loses nothing.

The reference for "nothing lost" is a full decode followed by the same resize: what the processor
would have made of the full image. Photos are scikit-image's sample photographs scaled up to a
12-MP phone photo's size, as JPEG.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from PIL import Image
from skimage import data

from model.detect import Box, face_view
from model.tiles import TilePlan
from server.media import MediaPolicy, Need, long_side
from server.media.decode import decode_image_bytes, open_image

PHONE = (4032, 3024)
FACELLM = TilePlan((448, 448), max_tiles=12)
DEMO = TilePlan((64, 64), max_tiles=4)
POLICY = MediaPolicy(8 << 20, 25_000_000, False, (), 5.0)
MAX_MEAN_ABS_DIFF = 2 / 255  # per channel value, on the 0–1 scale


@cache
def phone_jpeg(name: str, size: tuple[int, int] = PHONE) -> bytes:
    photo = Image.fromarray(getattr(data, name)()).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def canvas(plan: TilePlan, tiles: int | None) -> Need:
    return Need(lambda size: plan.canvas(size, tiles))


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() / 255)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
@pytest.mark.parametrize(
    ("plan", "tiles", "scale"),
    [(FACELLM, None, 2), (FACELLM, 1, 4), (DEMO, None, 8), (DEMO, 1, 8)],
)
def test_reduced_decode_gives_the_model_the_same_tiles(
    name: str, plan: TilePlan, tiles: int | None, scale: int
) -> None:
    jpeg = phone_jpeg(name)
    planned = open_image(jpeg, POLICY, canvas(plan, tiles), None)
    assert planned.image.size == (PHONE[0] // scale, PHONE[1] // scale)  # libjpeg's DCT scaling
    reduced = decode_image_bytes(jpeg, POLICY, need=canvas(plan, tiles))
    full = decode_image_bytes(jpeg, POLICY)
    assert full.size == PHONE
    reference = full.resize(reduced.size, Image.Resampling.BICUBIC)
    assert reduced.size == plan.canvas(PHONE, tiles)
    assert mean_abs_diff(reduced, reference) <= MAX_MEAN_ABS_DIFF


def test_face_crops_from_a_reduced_photo_match_crops_from_the_full_one() -> None:
    jpeg = phone_jpeg("astronaut")
    held = decode_image_bytes(jpeg, POLICY, need=long_side(1920))
    full = decode_image_bytes(jpeg, POLICY)
    assert held.size == (2016, 1512)  # half scale: the smallest that keeps 1920 px
    face_full = Box(1371, 390, 748, 560)  # the astronaut's face, in full-size coordinates
    face_held = Box(*(round(v / 2) for v in (1371, 390, 748, 560)))
    a, b = face_view(held, face_held, FACELLM), face_view(full, face_full, FACELLM)
    assert a.size == b.size == (448, 448)
    assert mean_abs_diff(a, b) <= MAX_MEAN_ABS_DIFF


def test_exif_orientation_is_kept_and_sizes_are_upright() -> None:
    photo = Image.fromarray(data.astronaut()).resize(PHONE)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotate 90° clockwise)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90, exif=exif)
    planned = open_image(buf.getvalue(), POLICY, canvas(FACELLM, None), None)
    assert planned.original == (3024, 4032)
    out = decode_image_bytes(buf.getvalue(), POLICY, need=canvas(FACELLM, None))
    assert out.size == FACELLM.canvas((3024, 4032)) == (1344, 1792)
    upright = photo.transpose(Image.Transpose.ROTATE_270).resize(out.size, Image.Resampling.BICUBIC)
    assert mean_abs_diff(out, upright) <= MAX_MEAN_ABS_DIFF


def test_a_transparent_png_is_held_at_its_need_not_its_size() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (3000, 2000), (0, 0, 0, 0)).save(buf, "PNG")
    out = decode_image_bytes(buf.getvalue(), POLICY, need=canvas(FACELLM, 1))
    assert (out.mode, out.size) == ("RGB", (448, 448))
    assert out.getpixel((10, 10)) == (255, 255, 255)


def test_small_images_are_never_upscaled_when_only_reducing() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(buf, "PNG")
    assert decode_image_bytes(buf.getvalue(), POLICY, need=long_side(1920)).size == (300, 200)
