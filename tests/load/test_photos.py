from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from loadtests.images import jpeg_data_url
from loadtests.photos import PHOTO_SIZE, PhotoKind, chat_photo, faces_photo, photo_data_urls
from model.detectors import make_detector

SMALL = (320, 240)


def decode(url: str) -> tuple[Image.Image, int]:
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    raw = base64.b64decode(payload)
    image = Image.open(io.BytesIO(raw))
    assert image.format == "JPEG"
    return image, len(raw)


@pytest.mark.parametrize("kind", ["chat", "faces"])
def test_photos_are_distinct_jpegs_of_the_asked_size_and_repeat_exactly(kind: PhotoKind) -> None:
    urls = photo_data_urls(kind, 6, start=1_000_000, size=SMALL)
    assert len(set(urls)) == 6
    assert all(decode(url)[0].size == SMALL for url in urls)
    assert photo_data_urls(kind, 2, start=1_000_003, size=SMALL) == urls[3:5]


def test_faces_differ_inside_the_portraits_too() -> None:
    """vLLM caches images by their pixels: the face crops it gets must differ between photos."""
    box = (40, 60, 120, 140)  # inside the left portrait at SMALL size
    crops = [np.asarray(faces_photo(i, SMALL).crop(box)) for i in range(4)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(crops) for b in crops[i + 1 :])


def test_an_index_that_does_not_fit_the_stamp_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        chat_photo(2**40, SMALL)


def test_full_size_photos_weigh_about_two_megabytes_and_show_two_faces() -> None:
    chat, chat_bytes = decode(jpeg_data_url(chat_photo(7), 90))
    faces, faces_bytes = decode(jpeg_data_url(faces_photo(1_000_000), 90))
    assert chat.size == faces.size == PHOTO_SIZE
    assert 1.5e6 < chat_bytes < 3e6 and 1.5e6 < faces_bytes < 3e6
    boxes = make_detector("centerface").detect(faces.convert("RGB"), 8)
    assert len(boxes) == 2
    # One face in each half.
    assert sorted(b.x + b.w // 2 < PHOTO_SIZE[0] // 2 for b in boxes) == [False, True]
