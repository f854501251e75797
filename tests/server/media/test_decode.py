"""Decoding (server/media/decode.py): every accepted format becomes RGB pixels, base64 is read
strictly, everything else is refused before it costs anything; and a photo is decoded only as
large as its use, with nothing lost to the model."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from functools import cache
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as samples

from model.detect import Box, face_view
from model.tiles import TilePlan
from server.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from server.media import MediaPolicy, decode, long_side, tile_canvas
from server.media.decode import base64_bytes, data_url_bytes, open_image
from tests.server.media.helpers import (
    PARAM,
    data_url,
    decode_image_bytes,
    encode,
    expect,
    load_image,
    near,
    policy,
    red_blue,
)


def decode_base64_image(b64: str, pol: MediaPolicy, *, param: str | None = None) -> Image.Image:
    return decode_image_bytes(base64_bytes(b64, pol, param), pol, param=param)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares width×height; the pixel data is never there."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"x") + chunk(b"IEND", b"")


def webp_vp8x_header(width: int, height: int) -> bytes:
    """A WebP whose VP8X chunk declares a width×height canvas and nothing else."""
    vp8x = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- good images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "save"),
    [
        ("JPEG", "image/jpeg", {"quality": 95}),
        ("JPEG", "image/jpg", {"quality": 95}),
        ("PNG", "image/png", {}),
        ("WEBP", "image/webp", {"lossless": True}),
        ("WEBP", "image/webp", {"quality": 90}),
    ],
)
async def test_data_url_decodes_to_rgb(fmt: str, mime: str, save: dict[str, Any]) -> None:
    im = await load_image(data_url(encode(red_blue(), fmt, **save), mime), policy())
    assert (im.mode, im.size) == ("RGB", (40, 20))
    assert near(im.getpixel((5, 10)), (255, 0, 0))
    assert near(im.getpixel((35, 10)), (0, 0, 255))


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGBA"), ("PNG", "LA"), ("WEBP", "RGBA")])
def test_transparency_is_composited_on_white(fmt: str, mode: str) -> None:
    im = red_blue(mode="RGBA")
    im.putpixel((35, 10), (0, 0, 255, 0))  # one fully transparent pixel on the blue side
    out = decode_image_bytes(encode(im.convert(mode), fmt, lossless=True), policy())
    assert out.mode == "RGB"
    assert near(out.getpixel((35, 10)), (255, 255, 255))
    assert out.getpixel((35, 11)) != (255, 255, 255)


def test_palette_png_with_transparent_index() -> None:
    im = red_blue().convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    red_index = im.getpixel((0, 0))
    out = decode_image_bytes(encode(im, "PNG", transparency=red_index), policy())
    assert out.mode == "RGB"
    assert out.getpixel((5, 10)) == (255, 255, 255)
    assert near(out.getpixel((35, 10)), (0, 0, 255))


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image_bytes(data, policy())
    assert out.mode == "RGB"
    assert near(out.getpixel((8, 8)), (255, 0, 0))


def test_16bit_greyscale_png_is_scaled_not_clipped() -> None:
    data = encode(Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode_image_bytes(data, policy())
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = 90° clockwise
    data = encode(red_blue(), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image_bytes(data, policy())
    assert out.size == (20, 40)
    assert near(out.getpixel((10, 5)), (255, 0, 0))  # left → top
    assert near(out.getpixel((10, 35)), (0, 0, 255))


async def test_declared_type_is_not_trusted_bytes_decide() -> None:
    """A PNG labelled image/jpeg decodes as the PNG it is (PNG decoder only, by sniffing)."""
    out = await load_image(data_url(encode(red_blue(), "PNG"), "image/jpeg"), policy())
    assert out.size == (40, 20)


# --- base64 ----------------------------------------------------------------------------------


def test_raw_base64_missing_padding_is_tolerated() -> None:
    data = encode(Image.new("RGB", (3, 3)), "PNG")
    text = base64.b64encode(data).decode()
    assert text.endswith("=")
    assert decode_base64_image(text.rstrip("="), policy()).size == (3, 3)
    assert decode_base64_image(f"  {text}\n", policy()).size == (3, 3)


@pytest.mark.parametrize(
    "text",
    ["", "A", "iVBORw0K GgoAAAANSUhEUg==", "iVBORw0KGgo\nAAAANSUhEUg==", "iVBORw0KGgo-_AA", "ïVBO"],
)
def test_malformed_base64_is_invalid_image(text: str) -> None:
    err = expect(InvalidRequest, "invalid_image", decode_base64_image, text, policy(), param=PARAM)
    assert err.param == PARAM
    assert err.status == 400


@pytest.mark.parametrize("junk", ["!!!!", "-_-_", "\n\n\n\n", "    "])
def test_base64_outside_the_standard_alphabet_is_refused_not_skipped(junk: str) -> None:
    text = base64.b64encode(encode(Image.new("RGB", (3, 3)), "PNG")).decode()
    assert decode_base64_image(text, policy())
    mangled = text[:20] + junk + text[20:]
    expect(InvalidRequest, "invalid_image", decode_base64_image, mangled, policy())


def test_oversized_base64_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode.base64, "b64decode", lambda *_a, **_k: pytest.fail("decoded"))
    text = "A" * (4 * 1024 * 1024 // 3 + 8)
    err = expect(PayloadTooLarge, "image_too_large", decode_base64_image, text, policy())
    assert err.status == 413
    assert text[:32] not in err.message


def test_base64_exactly_at_the_byte_cap_is_not_refused_for_size() -> None:
    cap = 3000
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    data += b"\0" * (cap - len(data))  # trailing bytes after IEND are ignored by PNG readers
    assert decode_base64_image(base64.b64encode(data).decode(), policy(max_image_bytes=cap))
    with pytest.raises(PayloadTooLarge):
        decode_base64_image(base64.b64encode(data + b"\0").decode(), policy(max_image_bytes=cap))


# --- bad images ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "JPEG2000", "ICO"])
def test_other_formats_are_415_even_when_declared_jpeg(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    url = data_url(data, "image/jpeg")
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image_bytes(data_url_bytes(url, policy(), PARAM), policy(), param=PARAM)
    assert (info.value.code, info.value.status, info.value.param) == (
        "unsupported_image_format",
        415,
        PARAM,
    )


def test_jpeg2000_codestream_signature_is_415() -> None:
    expect(
        UnsupportedMediaType, "unsupported_image_format", decode_image_bytes,
        b"\xff\x4f\xff\x51" + bytes(64), policy(),
    )  # fmt: skip


@pytest.mark.parametrize("mime", ["image/gif", "image/tiff", "text/plain", "application/pdf", ""])
async def test_declared_type_outside_the_allow_list_is_415(mime: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        await load_image(data_url(encode(Image.new("RGB", (4, 4)), "PNG"), mime), policy())
    assert info.value.code == "unsupported_image_format"


@pytest.mark.parametrize(
    "url", ["data:image/png,rawtext", "data:image/png;base64", "data:;charset=x,abc"]
)
async def test_malformed_data_url_is_invalid_image(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await load_image(url, policy())
    assert info.value.code == "invalid_image"


def test_random_bytes_under_image_jpeg_are_400() -> None:
    payload = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    url = data_url(payload, "image/jpeg")
    with pytest.raises(InvalidRequest) as info:
        decode_image_bytes(data_url_bytes(url, policy(), None), policy())
    assert info.value.code == "invalid_image"
    assert url[30:60] not in info.value.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_invalid(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    expect(InvalidRequest, "invalid_image", decode_image_bytes, data[: len(data) // 2], policy())


def test_bytes_over_cap_are_413() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    expect(PayloadTooLarge, "image_too_large", decode_image_bytes, data, policy(max_image_bytes=50))


@pytest.mark.parametrize(
    ("data", "limit"),
    [
        (png_header_only(100_000, 100_000), 4_000_000),  # beyond PIL's own bomb limit too
        (png_header_only(2_100, 2_000), 4_000_000),  # beyond ours only
        (webp_vp8x_header(10_000, 10_000), 4_000_000),  # libwebp would allocate in open()
        (encode(Image.new("RGB", (70, 60)), "JPEG"), 4096),
    ],
)
def test_too_many_pixels_refused_before_any_decode(
    data: bytes, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda _self: pytest.fail("pixels decoded"))
    err = expect(
        PayloadTooLarge, "image_too_large", decode_image_bytes, data, policy(max_image_pixels=limit)
    )
    assert err.status == 413


def test_webp_canvas_is_checked_before_pil_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode.Image, "open", lambda *_a, **_k: pytest.fail("opened"))
    with pytest.raises(PayloadTooLarge):
        decode_image_bytes(webp_vp8x_header(3_000, 3_000), policy())


# --- decoding to need -------------------------------------------------------------------------
# A photo is decoded only as large as its use, and the model loses nothing. The reference for
# "nothing lost" is a full decode followed by the same resize: what the processor would have made
# of the full image. Photos are scikit-image's sample photographs scaled up to a 12-MP phone
# photo's size, as JPEG.


PHONE = (4032, 3024)


FACELLM = TilePlan((448, 448), max_tiles=12)


DEMO = TilePlan((64, 64), max_tiles=4)


POLICY = MediaPolicy(8 << 20, 25_000_000, False, (), 5.0)


MAX_MEAN_ABS_DIFF = 2 / 255  # per channel value, on the 0–1 scale


@cache
def phone_jpeg(name: str, size: tuple[int, int] = PHONE) -> bytes:
    photo = Image.fromarray(getattr(samples, name)()).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    return buf.getvalue()


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
    planned = open_image(jpeg, POLICY, tile_canvas(plan, tiles), None)
    assert planned.image.size == (PHONE[0] // scale, PHONE[1] // scale)  # libjpeg's DCT scaling
    reduced = decode_image_bytes(jpeg, POLICY, need=tile_canvas(plan, tiles))
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
    photo = Image.fromarray(samples.astronaut()).resize(PHONE)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotate 90° clockwise)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90, exif=exif)
    planned = open_image(buf.getvalue(), POLICY, tile_canvas(FACELLM, None), None)
    assert planned.original == (3024, 4032)
    out = decode_image_bytes(buf.getvalue(), POLICY, need=tile_canvas(FACELLM, None))
    assert out.size == FACELLM.canvas((3024, 4032)) == (1344, 1792)
    upright = photo.transpose(Image.Transpose.ROTATE_270).resize(out.size, Image.Resampling.BICUBIC)
    assert mean_abs_diff(out, upright) <= MAX_MEAN_ABS_DIFF


def test_a_transparent_png_is_held_at_its_need_not_its_size() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (3000, 2000), (0, 0, 0, 0)).save(buf, "PNG")
    out = decode_image_bytes(buf.getvalue(), POLICY, need=tile_canvas(FACELLM, 1))
    assert (out.mode, out.size) == ("RGB", (448, 448))
    assert out.getpixel((10, 10)) == (255, 255, 255)


def test_small_images_are_never_upscaled_when_only_reducing() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(buf, "PNG")
    assert decode_image_bytes(buf.getvalue(), POLICY, need=long_side(1920)).size == (300, 200)
