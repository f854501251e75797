"""Face images for load: crops, flips, scales and exposure shifts of scikit-image's astronaut.

Every index gives a different picture (so no image or prefix cache can flatter a system), the same
index always gives the same bytes (so two systems see identical load), and nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import random
from functools import cache

from PIL import Image, ImageEnhance, ImageOps

# The astronaut's face box in the 512×512 original (Haar cascade; docs/platform-notes.md).
FACE_BOX = (177, 66, 95, 95)
ORIGINAL_SIDE = 512


@cache
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def crop_around_face(rng: random.Random, width: int, height: int) -> Image.Image:
    """A width × height crop of the astronaut photo, placed at random but holding the whole face."""
    x, y, w, h = FACE_BOX
    left = rng.randint(max(0, x + w - width), min(x, ORIGINAL_SIDE - width))
    top = rng.randint(max(0, y + h - height), min(y, ORIGINAL_SIDE - height))
    return astronaut().crop((left, top, left + width, top + height))


def face_variant(index: int, size: int = 256) -> Image.Image:
    """The `index`-th variant: a square crop around the face, maybe mirrored, resized to `size`."""
    rng = random.Random(index)
    side = rng.randint(int(1.5 * FACE_BOX[2]), ORIGINAL_SIDE - 64)
    image = crop_around_face(rng, side, side)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    return image.resize((size, size), Image.Resampling.BILINEAR)


def jpeg_data_url(image: Image.Image, quality: int = 90) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def face_data_urls(count: int, size: int = 256, start: int = 0) -> list[str]:
    """`count` distinct JPEG data URLs, variants `start` … `start + count - 1`."""
    return [jpeg_data_url(face_variant(i, size)) for i in range(start, start + count)]


def scan_bomb(side: int = 4096, repeats: int = 1000) -> bytes:
    """A grey progressive JPEG whose last scan (an AC refinement) is repeated `repeats` times:
    small, valid enough for libjpeg (it only warns), and each repeat a full pass to decode."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, format="JPEG", progressive=True, quality=90)
    jpeg = buf.getvalue()
    last_scan = jpeg.rindex(b"\xff\xda")
    end = jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + jpeg[last_scan:end] * repeats + jpeg[end:]
