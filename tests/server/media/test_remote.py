"""Remote image URLs (server/media/remote.py): only http(s) to allow-listed hosts whose every
address is public, the connection made to the address that was checked, redirects checked hop
by hop, the body capped while it streams in.

Fetch tests talk to a real HTTP server on 127.0.0.1. Production code refuses loopback, so the
tests inject what DNS and routing would do for a public host: a resolver that maps test names to
a public-looking address, and a transport that delivers connections for that address to the local
server. Every check in server/media/ still runs unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from server.errors import InvalidRequest, PayloadTooLarge
from server.media import MediaPolicy, loader, remote
from tests.server.media.helpers import PARAM, PUBLIC_IP, encode, load_image, policy, red_blue

# --- URL policy (no fetch needed) ------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "javascript:1", "x"]
)
async def test_non_http_schemes_always_refused(url: str) -> None:
    remote = policy(allow_remote_images=True, remote_image_domains=("example.com",))
    with pytest.raises(InvalidRequest) as info:
        await load_image(url, remote, param=PARAM)
    assert (info.value.code, info.value.param) == ("image_url_not_allowed", PARAM)


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
            with contextlib.suppress(ConnectionError):  # the fetch hangs up past its cap
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
