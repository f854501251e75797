"""Remote image URLs, off unless allow-listed: every hop's addresses are checked, and the
connection goes to the address that was checked (no DNS rebinding), with the byte cap applied while
the body streams in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from server.media.policy import (
    MediaPolicy,
    canonical_host,
    fetch_failed,
    not_allowed,
    too_large,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) → the addresses a connection to host would use; injectable for tests."""

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the OS resolver gives for host (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast; embedded IPv4 (mapped, 6to4, NAT64) is unwrapped."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return ip.is_global and not (
        ip in _METADATA_ADDRESSES
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass
class _Fetch:
    """One remote fetch: GET with manual redirects, re-checking scheme, domain and every resolved
    address at each hop, then connecting to the address that was checked (no DNS rebinding)."""

    policy: MediaPolicy
    client: httpx.AsyncClient
    resolver: Resolver
    param: str | None

    async def run(self, raw_url: str) -> bytes:
        url = _remote_url(raw_url, self.policy, self.param)
        for _ in range(MAX_REDIRECTS + 1):
            location, body = await self._get_once(url, await self._checked_address(url))
            if location is None:
                return body
            url = _remote_url(str(url.join(location)), self.policy, self.param)
        raise fetch_failed(f"Image URL redirected more than {MAX_REDIRECTS} times.", self.param)

    async def _checked_address(self, url: httpx.URL) -> IPAddress:
        """Resolve once; refuse if ANY answer is non-public; the caller dials the first one."""
        host = url.raw_host.decode("ascii")
        try:
            answers: Sequence[str] = [str(ipaddress.ip_address(host))]
        except ValueError:
            answers = await self.resolver(host, url.port or (443 if url.scheme == "https" else 80))
        try:
            addresses = [ipaddress.ip_address(a) for a in answers]
        except ValueError:
            raise not_allowed("Image host resolves to an unusable address.", self.param) from None
        if not addresses:
            raise fetch_failed("Image host did not resolve.", self.param)
        if not all(is_public_address(a) for a in addresses):
            raise not_allowed("Image host resolves to a non-public address.", self.param)
        return addresses[0]

    async def _get_once(self, url: httpx.URL, address: IPAddress) -> tuple[str | None, bytes]:
        """GET sent to the checked address; the Host header and TLS SNI/verification keep the
        name. Returns (redirect location, b"") or (None, body capped while it streams)."""
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Accept": "image/jpeg, image/png, image/webp",
            "Accept-Encoding": "identity",  # no gzip bombs: the cap applies to what arrives
            "Connection": "close",
        }
        sni = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        target = url.copy_with(host=str(address), fragment=None)
        request = self.client.build_request("GET", target, headers=headers, extensions=sni)
        response = await self.client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code in _REDIRECTS:
                if not (location := response.headers.get("location")):
                    raise fetch_failed("Image URL redirected without a Location.", self.param)
                return location, b""
            if response.status_code != 200:
                raise fetch_failed(f"Image URL answered HTTP {response.status_code}.", self.param)
            return None, await self._read_capped(response)
        finally:
            await response.aclose()

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.policy.max_image_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large(f"Image exceeds {cap} bytes.", self.param)
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > cap:
                raise too_large(f"Image exceeds {cap} bytes.", self.param)
        return bytes(body)


async def fetch(
    url: str,
    policy: MediaPolicy,
    client: httpx.AsyncClient | None,
    resolver: Resolver,
    param: str | None,
) -> bytes:
    try:
        async with asyncio.timeout(policy.remote_image_timeout_s), AsyncExitStack() as stack:
            if client is None:  # private: no proxy settings from env, no shared pool or cookies
                client = await stack.enter_async_context(
                    httpx.AsyncClient(trust_env=False, timeout=policy.remote_image_timeout_s)
                )
            return await _Fetch(policy, client, resolver, param).run(url)
    except TimeoutError:
        raise fetch_failed("Fetching the image timed out.", param) from None
    except (httpx.HTTPError, OSError) as exc:
        raise fetch_failed("Fetching the image failed.", param) from exc


def _remote_url(raw: str, policy: MediaPolicy, param: str | None) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL:
        raise not_allowed("Image URL is malformed.", param) from None
    if url.scheme not in ("http", "https"):
        raise not_allowed("Image URLs must be http(s) (redirects included).", param)
    if url.userinfo:
        raise not_allowed("Image URLs must not carry credentials.", param)
    host = canonical_host(url)
    if not any(host == d or host.endswith("." + d) for d in policy.remote_image_domains):
        raise not_allowed(f"Image host '{host[:253]}' is not in the allowed domains.", param)
    return url
