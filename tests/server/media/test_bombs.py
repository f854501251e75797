"""CPU bombs (server/media/jpeg.py, decode.py): a JPEG of repeated scans is refused before it is
decoded, and any decode stops once its time budget is spent or its request is gone."""

from __future__ import annotations

import io
import threading
import time
from functools import cache

import pytest
from PIL import Image

from loadtests.images import scan_bomb
from server.errors import InvalidRequest
from server.media.decode import DecodeStopped, finish, open_image
from server.media.jpeg import count_scans
from tests.images import astronaut
from tests.server.media.helpers import FULL_SIZE, decode_image_bytes, encode, expect, policy


def test_scans_are_counted_as_libjpeg_would_decode_them() -> None:
    assert count_scans(encode(astronaut(), "JPEG"), 100) == 1
    assert count_scans(encode(astronaut(), "JPEG", progressive=True), 100) == 10
    # Restart markers and stuffed bytes inside a scan's data do not end it.
    assert count_scans(encode(astronaut(), "JPEG", restart_marker_blocks=1), 100) == 1
    # An EXIF thumbnail (a whole JPEG inside APP1) is skipped with its segment.
    exif = Image.Exif()
    exif[0x010E] = "x" * 1000
    with_exif = encode(astronaut(), "JPEG", progressive=True, exif=exif)
    assert count_scans(with_exif, 100) == 10


def test_the_count_stops_past_the_cap() -> None:
    assert count_scans(scan_bomb(256, 500), 64) == 65


def test_a_scan_bomb_is_refused_before_decoding() -> None:
    bomb = scan_bomb(4096, 1000)
    start = time.process_time()
    error = expect(
        InvalidRequest, "too_many_scans", decode_image_bytes, bomb, policy(max_image_pixels=2**25)
    )
    cpu = time.process_time() - start
    assert "64 scans" in error.message
    print(f"scan bomb ({len(bomb)} bytes, 1,006 scans) refused in {cpu * 1000:.2f} ms of CPU")


def test_a_real_progressive_jpeg_still_decodes() -> None:
    data = encode(astronaut(), "JPEG", progressive=True)
    assert decode_image_bytes(data, policy()).size == (512, 512)


@cache
def slow_png() -> bytes:
    """84 KB of PNG that takes ≈ 0.4 s to decode here (25 MP of one colour)."""
    return encode(Image.new("RGB", (5000, 5000), (10, 20, 30)), "PNG")


def test_a_decode_past_its_time_budget_stops_reading_and_is_refused() -> None:
    data = slow_png()
    pol = policy(max_image_pixels=2**25, decode_timeout_s=0.01)
    planned = open_image(data, pol, FULL_SIZE, None)
    expect(InvalidRequest, "image_decode_too_slow", finish, planned)
    assert planned.source.tell() < len(data)  # stopped before it had read all its input


def test_a_decode_whose_work_ends_past_its_budget_is_refused() -> None:
    pol = policy(max_image_pixels=2**25, max_jpeg_scans=10**6, decode_timeout_s=0.01)
    expect(InvalidRequest, "image_decode_too_slow", decode_image_bytes, scan_bomb(1024, 50), pol)


def test_a_cancelled_decode_stops_in_its_thread() -> None:
    data = slow_png()
    planned = open_image(data, policy(max_image_pixels=2**25), FULL_SIZE, None)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            finish(planned)
        except BaseException as e:  # what stopped it is the result
            outcome.append(e)

    thread = threading.Thread(target=run)
    planned.cancel()  # before the thread starts: no timing to depend on
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert outcome and isinstance(outcome[0], DecodeStopped)
    assert planned.source.tell() < len(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_decode_within_the_default_budget(fmt: str) -> None:
    big = astronaut().resize((2000, 2000))
    data = io.BytesIO()
    big.save(data, fmt)
    assert decode_image_bytes(
        data.getvalue(), policy(max_image_bytes=64 << 20, max_image_pixels=10**8)
    ).size == (2000, 2000)
