from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from loadtests.images import jpeg_data_url
from loadtests.photos import PHOTO_SIZE, PhotoKind, chat_photo, faces_photo, photo_data_urls
from model.detectors import make_detector
from server.config import Settings

SMALL = (320, 240)


def decode(url: str) -> tuple[Image.Image, int]:
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    raw = base64.b64decode(payload)
    image = Image.open(io.BytesIO(raw))
    assert image.format == "JPEG"
    return image, len(raw)


@pytest.mark.parametrize("kind", ["chat", "one_face", "two_faces"])
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


def test_full_size_photos_weigh_about_two_megabytes() -> None:
    chat, chat_bytes = decode(jpeg_data_url(chat_photo(7), 90))
    faces, faces_bytes = decode(jpeg_data_url(faces_photo(1_000_000), 90))
    assert chat.size == faces.size == PHOTO_SIZE
    assert 1.5e6 < chat_bytes < 3e6 and 1.5e6 < faces_bytes < 3e6


@pytest.mark.parametrize("faces", [1, 2])
def test_the_server_detector_finds_exactly_the_faces_a_photo_shows(faces: int) -> None:
    """As the server runs it (its default detector, working copy, and threshold)."""
    settings = Settings()
    detector = make_detector(
        settings.face_detector,
        settings.face_detector_model,
        settings.face_score_threshold,
        settings.face_detect_side,
    )
    for index in (3, 1_000_000):
        photo = faces_photo(index, faces=faces)
        boxes = detector.detect(photo, settings.max_faces)
        assert len(boxes) == faces
        # One face in each half of a two-face photo; the one face in the middle otherwise.
        centres = sorted((b.x + b.w // 2) * faces // PHOTO_SIZE[0] for b in boxes)
        assert centres == list(range(faces))


def test_a_photo_of_three_faces_is_refused() -> None:
    with pytest.raises(ValueError, match="one or two"):
        faces_photo(0, SMALL, faces=3)
