"""server/media/: image input validation, decoding, and the remote-URL (SSRF) policy.

Remote tests talk to a real HTTP server on 127.0.0.1. Production code refuses loopback, so the
tests inject what DNS and routing would do for a public host: a resolver that maps test names to
a public-looking address, and a transport that delivers connections for that address to the local
server. Every check in server/media/ still runs unchanged.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFile

from server.config import Settings
from server.errors import APIError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from server.media import ImageLoader, MediaPolicy, Need, PixelBudget, decode, loader, remote
from server.media.decode import FULL_SIZE, base64_bytes, data_url_bytes, decode_image_bytes
from server.media.remote import Resolver, system_resolver
from server.metrics import Metrics

PARAM = "messages[0].content[1].image_url.url"
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


def decode_base64_image(b64: str, pol: MediaPolicy, *, param: str | None = None) -> Image.Image:
    return decode_image_bytes(base64_bytes(b64, pol, param), pol, param=param)


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


# --- URL policy (no fetch needed) ------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "javascript:1", "x"]
)
async def test_non_http_schemes_always_refused(url: str) -> None:
    remote = policy(allow_remote_images=True, remote_image_domains=("example.com",))
    with pytest.raises(InvalidRequest) as info:
        await load_image(url, remote, param=PARAM)
    assert (info.value.code, info.value.param) == ("image_url_not_allowed", PARAM)


async def test_remote_disabled_says_so_and_points_to_data_urls() -> None:
    with pytest.raises(InvalidRequest) as info:
        await load_image("https://example.com/a.jpg", policy())
    assert info.value.code == "image_url_not_allowed"
    assert "disabled" in info.value.message
    assert "data:" in info.value.message


@pytest.mark.parametrize(
    ("url", "listed"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://[::1]:8080/", "::1"),
        ("http://0.0.0.0/", "0.0.0.0"),
    ],
)
async def test_internal_addresses_refused_by_domain_and_by_address(url: str, listed: str) -> None:
    unlisted = policy(allow_remote_images=True, remote_image_domains=("example.com",))
    with pytest.raises(InvalidRequest, match="not in the allowed domains"):
        await load_image(url, unlisted)
    allow_listed = policy(allow_remote_images=True, remote_image_domains=(listed,))
    with pytest.raises(InvalidRequest, match="non-public address") as info:
        await load_image(url, allow_listed)
    assert info.value.code == "image_url_not_allowed"


async def test_localhost_refused_through_the_system_resolver() -> None:
    with pytest.raises(InvalidRequest, match="non-public address"):
        await load_image(
            "http://localhost/a.png",
            policy(allow_remote_images=True, remote_image_domains=("localhost",)),
        )


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/a.jpg",
        "https://example.com.evil.com/a.jpg",
        "https://notexample.com/a.jpg",
        "https://example.com@evil.com/a.jpg",
        "https://user:pw@example.com/a.jpg",
    ],
)
async def test_hosts_outside_the_allow_list_refused(url: str) -> None:
    remote = policy(allow_remote_images=True, remote_image_domains=("example.com",))
    with pytest.raises(InvalidRequest) as info:
        await load_image(url, remote, resolver=_resolver_must_not_run)
    assert info.value.code == "image_url_not_allowed"


async def _resolver_must_not_run(host: str, port: int) -> list[str]:
    pytest.fail(f"resolved {host}:{port}")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("100.100.100.200", False),
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("255.255.255.255", False),
        ("::127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("2002:5db8:d70e::", True),  # 6to4 wrapping a public address
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::5db8:d70e", True),  # NAT64 of a public address (IPv6-only clusters)
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("192.0.0.192", False),  # Oracle Cloud metadata; ipaddress calls it global
        ("::ffff:93.184.215.14", True),  # judged by the IPv4 address it maps to
        ("::ffff:169.254.169.254", False),
        ("fe80::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    import ipaddress

    assert remote.is_public_address(ipaddress.ip_address(address)) is public


def test_policy_from_settings() -> None:
    settings = Settings(
        allow_remote_images=True,
        remote_image_domains=["*.Images.Example.", "bücher.de"],
        max_image_bytes=2048,
    )
    pol = MediaPolicy.from_settings(settings)
    assert pol.remote_image_domains == ("images.example", "xn--bcher-kva.de")
    assert pol.max_image_bytes == 2048
    with pytest.raises(ValueError, match="remote_image_domains"):
        MediaPolicy.from_settings(Settings(allow_remote_images=True, remote_image_domains=[]))


# --- remote fetches against a local server ---------------------------------------------------

JPEG = encode(red_blue(), "JPEG", quality=95)


class _Handler(BaseHTTPRequestHandler):
    hosts: list[str]

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]
        redirects = {
            "/to-img": "/img.jpg",
            "/to-loopback": f"http://127.0.0.1:{port}/img.jpg",
            "/to-internal-name": "http://internal.images.example/img.jpg",
            "/to-file": "file:///etc/passwd",
            "/loop": "/loop",
            "/hop0": "/hop1",
            "/hop1": "/hop2",
            "/hop2": "/hop3",
            "/hop3": "/img.jpg",
        }
        if self.path in redirects:
            self._send(302, b"", {"Location": redirects[self.path]})
        elif self.path == "/img.jpg":
            self._send(200, JPEG, {"Content-Type": "image/jpeg"})
        elif self.path == "/big-declared":
            self._send(200, JPEG, {"Content-Length": str(10**9)}, length=False)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"8000\r\n" + bytes(0x8000) + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"nope", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str], length: bool = True) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def local_server() -> Iterator[tuple[int, list[str]]]:
    hosts: list[str] = []
    handler = type("Handler", (_Handler,), {"hosts": hosts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hosts
    server.shutdown()
    server.server_close()
    thread.join(5)


class _ToLocalServer(httpx.AsyncBaseTransport):
    """Routing stand-in: connections server/media opens to PUBLIC_IP reach the local server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport()
        self.addresses: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.addresses.append(request.url.host)
        assert request.url.host == PUBLIC_IP, "server/media must connect to the checked address"
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _fake_dns(host: str, port: int) -> list[str]:
    return {"images.example": [PUBLIC_IP], "internal.images.example": ["127.0.0.1"]}[host]


REMOTE = policy(allow_remote_images=True, remote_image_domains=("images.example",))


async def fetch(port: int, path: str, pol: MediaPolicy = REMOTE) -> Image.Image:
    async with httpx.AsyncClient(transport=_ToLocalServer(port)) as client:
        return await load_image(
            f"http://images.example{path}", pol, client=client, resolver=_fake_dns, param=PARAM
        )


@pytest.mark.parametrize("path", ["/img.jpg", "/to-img", "/hop1"])
async def test_remote_fetch_follows_up_to_three_redirects(
    local_server: tuple[int, list[str]], path: str
) -> None:
    port, hosts = local_server
    hosts.clear()
    im = await fetch(port, path)
    assert (im.mode, im.size) == ("RGB", (40, 20))
    assert set(hosts) == {"images.example"}  # the name travels in Host while the IP is dialled


@pytest.mark.parametrize(
    ("path", "code", "why"),
    [
        ("/to-loopback", "image_url_not_allowed", "not in the allowed domains"),
        ("/to-internal-name", "image_url_not_allowed", "non-public address"),
        ("/to-file", "image_url_not_allowed", "must be http"),
        ("/loop", "image_fetch_failed", "redirected more than 3"),
        ("/hop0", "image_fetch_failed", "redirected more than 3"),
        ("/missing", "image_fetch_failed", "HTTP 404"),
    ],
)
async def test_remote_refusals_and_failures(
    local_server: tuple[int, list[str]], path: str, code: str, why: str
) -> None:
    with pytest.raises(InvalidRequest, match=why) as info:
        await fetch(local_server[0], path)
    assert (info.value.code, info.value.param) == (code, PARAM)


async def test_redirect_to_allow_listed_loopback_literal_refused_by_address(
    local_server: tuple[int, list[str]],
) -> None:
    pol = policy(allow_remote_images=True, remote_image_domains=("images.example", "127.0.0.1"))
    with pytest.raises(InvalidRequest, match="non-public address"):
        await fetch(local_server[0], "/to-loopback", pol)


@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked"])
async def test_remote_body_capped_while_streaming(
    local_server: tuple[int, list[str]], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "open_image", lambda *_a, **_k: pytest.fail("decoded"))
    with pytest.raises(PayloadTooLarge) as info:
        await fetch(local_server[0], path)
    assert info.value.code == "image_too_large"


async def test_any_private_answer_refuses_the_host() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return [PUBLIC_IP, "10.0.0.7"]

    with pytest.raises(InvalidRequest, match="non-public address"):
        await load_image("https://images.example/a.jpg", REMOTE, resolver=mixed)


async def test_timeout_covers_dns_too() -> None:
    async def hangs(host: str, port: int) -> list[str]:
        import asyncio

        await asyncio.sleep(30)
        return [PUBLIC_IP]

    pol = policy(
        allow_remote_images=True, remote_image_domains=("images.example",),
        remote_image_timeout_s=0.2,
    )  # fmt: skip
    with pytest.raises(InvalidRequest, match="timed out") as info:
        await load_image("https://images.example/a.jpg", pol, resolver=hangs)
    assert info.value.code == "image_fetch_failed"


async def test_unresolvable_host_is_fetch_failure() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(InvalidRequest) as info:
        await load_image("https://images.example/a.jpg", REMOTE, resolver=nxdomain)
    assert info.value.code == "image_fetch_failed"


async def test_https_dials_the_address_but_verifies_the_name() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(JPEG))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        pol = policy(allow_remote_images=True, remote_image_domains=("images.example",))
        await load_image(
            "https://cdn.images.example:8443/a.jpg#frag", pol, client=client, resolver=_any_public
        )
    (request,) = seen
    assert str(request.url) == f"https://{PUBLIC_IP}:8443/a.jpg"
    assert request.headers["host"] == "cdn.images.example:8443"
    assert request.extensions["sni_hostname"] == "cdn.images.example"
    assert request.headers["connection"] == "close"


async def _any_public(host: str, port: int) -> list[str]:
    return [PUBLIC_IP]


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
