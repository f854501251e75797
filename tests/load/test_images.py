from __future__ import annotations

import base64
import io

from PIL import Image

from loadtests.images import face_data_urls, face_variant


def test_variants_differ_from_each_other_and_repeat_exactly() -> None:
    urls = face_data_urls(40, size=64)
    assert len(set(urls)) == 40
    assert face_data_urls(3, size=64, start=7) == urls[7:10]


def test_variant_is_a_square_rgb_image_of_the_asked_size() -> None:
    image = face_variant(5, size=96)
    assert (image.size, image.mode) == ((96, 96), "RGB")


def test_data_url_is_a_decodable_jpeg() -> None:
    url = face_data_urls(1, size=64)[0]
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    decoded = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert (decoded.format, decoded.size) == ("JPEG", (64, 64))
