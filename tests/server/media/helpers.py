"""Helpers shared by the tests of server/media/: a policy, images made and encoded on the spot, and
loading through the one entry point, `ImageLoader.load`."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from PIL import Image

from server.errors import APIError
from server.media import ImageLoader, MediaPolicy, Need, PixelBudget
from server.media.decode import finish, open_image
from server.media.remote import Resolver, system_resolver
from server.metrics import Metrics

PARAM = "messages[0].content[1].image_url.url"
FULL_SIZE = Need(lambda size: size, exact=False)


def decode_image_bytes(
    data: bytes, pol: MediaPolicy, *, need: Need = FULL_SIZE, param: str | None = None
) -> Image.Image:
    """Both decoding steps at once (the loader does other work between them)."""
    return finish(open_image(data, pol, need, param), param)


PUBLIC_IP = "93.184.215.14"  # stands in for a public CDN address; never actually contacted


def policy(**overrides: Any) -> MediaPolicy:
    base: dict[str, Any] = {
        "max_image_bytes": 1024 * 1024,
        "max_image_pixels": 4_000_000,
        "allow_remote_images": False,
        "remote_image_domains": (),
        "remote_image_timeout_s": 5.0,
    }
    return MediaPolicy(**(base | overrides))


async def load_image(
    url: str,
    pol: MediaPolicy,
    *,
    client: httpx.AsyncClient | None = None,
    resolver: Resolver = system_resolver,
    param: str | None = None,
    need: Need = FULL_SIZE,
) -> Image.Image:
    """Through the one entry point, `ImageLoader.load`, with a budget that never binds."""
    images = ImageLoader(pol, Metrics("test"), PixelBudget(10**9), 5.0, client, resolver)
    return (await images.load(url, param or "image", need)).image


def encode(im: Image.Image, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def red_blue(size: tuple[int, int] = (40, 20), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: orientation mistakes show up as colour mistakes."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return im.convert(mode)


def near(actual: Sequence[int], expected: Sequence[int], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def expect(exc_type: type[APIError], code: str, call: Any, *args: Any, **kw: Any) -> APIError:
    with pytest.raises(exc_type) as info:
        call(*args, **kw)
    assert info.value.code == code
    return info.value
