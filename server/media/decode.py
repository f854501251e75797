"""Encoded image → RGB image at the size its use needs, never more.

Sizes are checked on the base64 text, then on the bytes, then on the header's width × height, each
before the next step costs anything; only JPEG, PNG and WebP are handed to a decoder, chosen by
sniffing the bytes rather than trusting a declared type.

Decoding happens in two steps so the caller can reserve memory in between: `open_image` reads the
header and plans the decode (cheap), `finish` decodes (CPU-bound). A JPEG decodes straight to a
reduced size (libjpeg's DCT scaling: 1/2, 1/4, 1/8) when its use needs less; every other image is
decoded whole and brought down to its need at once, so no full-size buffer outlives the decode.

The decoder's CPU is bounded too: a JPEG's scans are counted before decoding (`jpeg.py`), and the
decoder takes its input in small chunks from a reader that refuses to hand over more once the
decode's time budget is spent or its request is gone, so a PNG decode stops within one chunk
instead of running to the end on a thread nobody waits for. libjpeg does a progressive JPEG's
work in the call that hands it the last bytes, and WebP decodes in one call: there the scan and
pixel caps bound the work, and a decode past its budget is still refused when it returns.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, ImageOps

from model.tiles import TilePlan
from server.errors import InvalidRequest, PayloadTooLarge
from server.media.jpeg import count_scans
from server.media.policy import MediaPolicy, invalid, too_large, unsupported

Size = tuple[int, int]

_DECLARED_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"})
_UNSUPPORTED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"qoif", "QOI"),
    (0, b"%PDF", "PDF"),
    (4, b"ftyp", "HEIF/AVIF"),
)
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap the axes
_RESAMPLE = Image.Resampling.BICUBIC  # as the InternVL processor resizes
_REDUCING_GAP = 3.0  # box-reduce first, then resample: fast, visually the same (Pillow docs)
# Input handed to the decoder per call: the time budget and cancellation are checked between
# calls. A 2 MB photo is ≈ 128 calls; a bomb's chunk holds at most a few hundred ms of work.
DECODE_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class Need:
    """The size an image is held at, given its original (upright) size.

    `exact`: resize to exactly that size (a model canvas, whose size decides the tiles).
    Otherwise only reduce by whole factors while staying at least that size (face photos, which
    keep spare resolution for their crops)."""

    size: Callable[[Size], Size]
    exact: bool = True


def tile_canvas(plan: TilePlan, tiles: int | None) -> Need:
    """Held at the canvas the processor would resize to under this tile budget; handed over at
    that size, the image gets exactly that many tiles (see model/tiles.py)."""
    return Need(lambda size: plan.canvas(size, tiles), exact=True)


def long_side(side: int) -> Need:
    """At least `side` pixels on the long side (or the whole image, if smaller)."""

    def size(original: Size) -> Size:
        scale = min(1.0, side / max(original))
        return (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))

    return Need(size, exact=False)


class DecodeStopped(Exception):
    """The decode's request is gone: it stopped between two chunks of input."""


class _DecodeTooSlow(Exception):
    pass


class _GuardedInput(io.BytesIO):
    """The image's bytes as the decoder reads them: no more input past the deadline (set when
    the decode starts) or once the request that wanted the image is gone."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.deadline = float("inf")
        self.cancelled = threading.Event()

    def read(self, size: int | None = -1, /) -> bytes:
        self.check()
        return super().read(size)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise DecodeStopped()
        if time.monotonic() > self.deadline:
            raise _DecodeTooSlow()


@dataclass
class Planned:
    """An opened image whose decode is planned: `pixels` is what decoding it will allocate."""

    image: Image.Image
    original: Size  # upright (EXIF-oriented) size of the full image
    need: Need
    swapped: bool  # EXIF orientation turns the image a quarter
    time_budget_s: float
    source: _GuardedInput  # what the decoder reads from

    @property
    def pixels(self) -> int:
        return self.image.width * self.image.height

    def cancel(self) -> None:
        """Stop the decode at its next chunk of input (from any thread)."""
        self.source.cancelled.set()


# --- bytes -----------------------------------------------------------------------------------


def data_url_bytes(url: str, policy: MediaPolicy, param: str | None) -> bytes:
    """`data:image/...;base64,...` → the image bytes (declared type checked, size capped)."""
    header, comma, payload = url.partition(",")
    parts = [p.strip().lower() for p in header[len("data:") :].split(";")]
    if not comma or parts[-1] != "base64":
        raise invalid("Image data URLs must look like data:image/jpeg;base64,<data>.", param)
    if parts[0] not in _DECLARED_TYPES:
        raise unsupported("the data URL's declared type", param)
    return base64_bytes(payload, policy, param)


def base64_bytes(b64: str, policy: MediaPolicy, param: str | None) -> bytes:
    """Bare standard base64 (padding optional, no inner whitespace) → bytes, capped first."""
    text = b64.strip()
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    if (len(text) - padding) * 3 // 4 > policy.max_image_bytes:
        raise too_large(f"Image exceeds {policy.max_image_bytes} bytes.", param)
    if len(text) % 4 == 1 or not text:
        raise invalid("Image data is not valid base64.", param)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Image data is not valid base64.", param) from None


# --- header and plan -------------------------------------------------------------------------


def open_image(data: bytes, policy: MediaPolicy, need: Need, param: str | None) -> Planned:
    """Sniff, read the header, check the limits, and plan a decode to `need`. Cheap: no pixels."""
    if len(data) > policy.max_image_bytes:
        raise too_large(f"Image exceeds {policy.max_image_bytes} bytes.", param)
    fmt = _sniff(data, param)
    if fmt == "WEBP" and (size := _webp_canvas_size(data)) is not None:
        _check_pixels(size, policy, param)  # libwebp allocates the canvas inside Image.open
    if fmt == "JPEG" and count_scans(data, policy.max_jpeg_scans) > policy.max_jpeg_scans:
        raise invalid(
            f"JPEG has more than {policy.max_jpeg_scans} scans; real photos have about 10.",
            param,
            code="too_many_scans",
        )
    source = _GuardedInput(data)
    with _decoder_errors(param):
        # No `with`: closing would free the pixels, forcing a copy of every image we return.
        im = Image.open(source, formats=[fmt])
        _check_pixels(im.size, policy, param)
        swapped = _orientation(im) in _TRANSPOSING_ORIENTATIONS
        original = _swap(im.size, swapped)
        if fmt == "JPEG":  # decodes at 1/2, 1/4 or 1/8 when that still covers the need
            im.draft(None, _swap(need.size(original), swapped))
        if isinstance(im, ImageFile.ImageFile):
            im.decodermaxblock = DECODE_CHUNK_BYTES
        return Planned(im, original, need, swapped, policy.decode_timeout_s, source)


def finish(planned: Planned, param: str | None = None) -> Image.Image:
    """Decode, turn upright, flatten to RGB, and bring down to the target. CPU-bound (sync).
    Raises `DecodeStopped` when `planned.cancel()` was called."""
    planned.source.deadline = time.monotonic() + planned.time_budget_s
    with _decoder_errors(param, planned.time_budget_s):
        im = planned.image
        im.load()
        # libjpeg does a progressive JPEG's work in its last call, which no read interrupts
        # (the scan cap bounds it): its result is refused all the same past the budget.
        planned.source.check()
        stored = im.size
        ImageOps.exif_transpose(im, in_place=True)
        original = planned.original
        if (im.size != stored) != planned.swapped:  # orientation found only in the pixel data
            original = _swap(original, True)
        rgb = _to_rgb(im)
        planned.image = rgb  # the decoded original can go as soon as it is converted
        del im
        return _fit(rgb, planned.need.size(original), planned.need.exact)


@contextmanager
def _decoder_errors(param: str | None, budget_s: float = 0.0) -> Iterator[None]:
    """Any decoder failure on untrusted bytes is the caller's 400; bombs are 413."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large("Image dimensions exceed the decoder's safety limit.", param) from None
    except _DecodeTooSlow:
        raise invalid(
            f"Image took longer than {budget_s:g} s to decode; send a plainer encoding.",
            param,
            code="image_decode_too_slow",
        ) from None
    except (InvalidRequest, PayloadTooLarge, MemoryError, DecodeStopped):
        raise
    except Exception as exc:
        raise invalid("Image could not be decoded (corrupt or truncated).", param) from exc


def _orientation(im: Image.Image) -> int | None:
    """EXIF orientation from the header alone: `getexif()` would decode a PNG to look further."""
    if "exif" not in im.info:
        return None
    value = im.getexif().get(ExifTags.Base.Orientation)
    return value if isinstance(value, int) else None


def _swap(size: Size, swapped: bool) -> Size:
    return (size[1], size[0]) if swapped else size


def _sniff(data: bytes, param: str | None) -> str:
    """The PIL format the bytes really are; known-but-refused formats → 415, the rest → 400."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for offset, magic, name in _UNSUPPORTED_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            raise unsupported(name, param)
    raise invalid("Image data is not a JPEG, PNG or WebP image.", param)


def _webp_canvas_size(data: bytes) -> Size | None:
    """Width and height from a WebP's first chunk (VP8X canvas, VP8 or VP8L frame header)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_pixels(size: Size, policy: MediaPolicy, param: str | None) -> None:
    width, height = size
    if width * height > policy.max_image_pixels:
        raise too_large(
            f"Image is {width}x{height} pixels; the limit is {policy.max_image_pixels} pixels.",
            param,
        )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any decoded mode → 8-bit RGB; transparency is composited onto white, not dropped to black.

    Compositing pastes through the alpha mask onto one new RGB image: 3 more bytes a pixel, where
    `alpha_composite` would allocate two more RGBA images and an RGB one."""
    if im.mode.startswith("I"):  # 16-bit greyscale: scale, since convert() would clip at 255
        im = im.point(lambda v: v * (1 / 256)).convert("L")
    if im.has_transparency_data:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)  # the alpha band is the mask
        return white
    return im if im.mode == "RGB" else im.convert("RGB")


def _fit(im: Image.Image, target: Size, exact: bool) -> Image.Image:
    if exact:
        if im.size == target:
            return im
        return im.resize(target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    factor = min(im.width // max(1, target[0]), im.height // max(1, target[1]))
    return im.reduce(factor) if factor >= 2 else im
