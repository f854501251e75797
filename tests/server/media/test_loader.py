"""The one way in (server/media/loader.py): remote URLs only where allowed, and decodes that cost
something run off the event loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from server.errors import InvalidRequest, PayloadTooLarge
from server.media import decode, loader
from tests.server.media.helpers import data_url, encode, load_image, policy, red_blue


async def test_remote_disabled_says_so_and_points_to_data_urls() -> None:
    with pytest.raises(InvalidRequest) as info:
        await load_image("https://example.com/a.jpg", policy())
    assert info.value.code == "image_url_not_allowed"
    assert "disabled" in info.value.message
    assert "data:" in info.value.message


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the pixel count of every decode that runs off the event loop's thread."""
    sizes: list[int] = []
    real = loader.finish

    def spy(planned: decode.Planned, param: str | None = None) -> Image.Image:
        pixels = planned.pixels
        image = real(planned, param)
        if threading.current_thread() is not threading.main_thread():
            sizes.append(pixels)
        return image

    monkeypatch.setattr(loader, "finish", spy)
    return sizes


async def test_small_images_decode_on_the_loop(threads: list[int]) -> None:
    im = await load_image(data_url(encode(red_blue(), "JPEG")), policy())
    assert im.size == (40, 20) and threads == []


async def test_a_few_bytes_that_unpack_to_many_pixels_decode_in_a_thread(
    threads: list[int],
) -> None:
    """A flat 1500² PNG is a few KB: the header, not the length, says it is costly to decode."""
    data = encode(Image.new("RGB", (1500, 1500), (9, 9, 9)), "PNG")
    assert len(data) < loader.INLINE_DECODE_BYTES
    im = await load_image(data_url(data, "image/png"), policy(max_image_pixels=1500 * 1500))
    assert im.size == (1500, 1500) and threads == [1500 * 1500]
    with pytest.raises(PayloadTooLarge):  # the real limit still holds, in the thread
        await load_image(data_url(data, "image/png"), policy(max_image_pixels=1000 * 1000))


async def test_long_payloads_decode_in_a_thread(threads: list[int]) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert len(data) > loader.INLINE_DECODE_BYTES and loader.INLINE_DECODE_PIXELS >= 300 * 300
    im = await load_image(data_url(data, "image/png"), policy())
    assert im.size == (300, 300) and threads == [300 * 300]
