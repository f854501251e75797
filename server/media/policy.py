"""What image input a server accepts, and the errors image input gets.

Multimodal servers are attacked through their image inputs: SSRF through image URLs, images
decoded before any size check, decompression bombs, exotic decoders with a history of memory bugs.
The policy holds the limits every other module of this package checks against.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import httpx

from server.config import Settings
from server.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType


@dataclass(frozen=True)
class MediaPolicy:
    """What image input a server accepts; see the same-named fields of `Settings`."""

    max_image_bytes: int
    max_image_pixels: int
    allow_remote_images: bool
    remote_image_domains: tuple[str, ...]
    remote_image_timeout_s: float
    max_jpeg_scans: int = 64
    decode_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        """Domains are normalised here so every policy, however built, compares the same way."""
        domains = (_normalise_domain(d) for d in self.remote_image_domains)
        object.__setattr__(self, "remote_image_domains", tuple(d for d in domains if d))

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaPolicy:
        """Settings made sure a remote-enabled config names domains."""
        return cls(
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            allow_remote_images=settings.allow_remote_images,
            remote_image_domains=tuple(settings.remote_image_domains),
            remote_image_timeout_s=settings.remote_image_timeout_s,
            max_jpeg_scans=settings.max_jpeg_scans,
            decode_timeout_s=settings.image_decode_timeout_s,
        )


def _normalise_domain(domain: str) -> str:
    """`*.Example.COM.` → `example.com`; subdomains match implicitly, IDNs become punycode."""
    name = domain.strip().lower().removeprefix("*").strip(".").strip("[]")
    if not name:
        return ""
    return canonical_host(httpx.URL(f"http://[{name}]/" if ":" in name else f"http://{name}/"))


def canonical_host(url: httpx.URL) -> str:
    """The host as compared with the allow-list: ASCII, lower case, IP literals in one spelling."""
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


# --- errors -----------------------------------------------------------------------------------


def invalid(message: str, param: str | None, code: str = "invalid_image") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def unsupported(what: str, param: str | None) -> UnsupportedMediaType:
    message = f"Unsupported image format ({what}); send JPEG, PNG or WebP."
    return UnsupportedMediaType(message, param=param, code="unsupported_image_format")


def too_large(message: str, param: str | None) -> PayloadTooLarge:
    return PayloadTooLarge(message, param=param, code="image_too_large")


def not_allowed(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="image_url_not_allowed")


def fetch_failed(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="image_fetch_failed")
