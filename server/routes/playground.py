"""GET /: the playground, a browser page over the public API (FACELLM_PLAYGROUND).

The page is static: its files ship as package data (`server/playground/`), are read once when
the app is built, and call `/v1/models`, `/v1/faces/schema` and `/v1/faces/analyze` like any
client — there is no second path to the model. It holds no secret, so it is served without a
key; its API calls carry the key the user types, kept for the browser tab only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import Response

ASSET_PREFIX = "/playground/"
PAGE = "index.html"  # served at `/`; every other file at ASSET_PREFIX + its name

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything from this server, nothing inline: an injected script or style has nowhere to run.
# blob: is the photo's preview (an object URL of the file the user chose, never uploaded twice).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load, so a server upgrade never meets a stale script.
    "Cache-Control": "no-cache",
}


def asset_dir() -> Traversable:
    return files("server") / "playground"


def asset_path(name: str) -> str:
    return "/" if name == PAGE else ASSET_PREFIX + name


def build_router() -> APIRouter:
    """One GET route per file of the page, its bytes read now (a few tens of KB in all)."""
    router = APIRouter(tags=["playground"], include_in_schema=False)
    for asset in sorted(asset_dir().iterdir(), key=lambda a: a.name):
        media_type = MEDIA_TYPES.get(PurePosixPath(asset.name).suffix)
        if asset.is_file() and media_type is not None:
            router.add_api_route(
                asset_path(asset.name),
                _responder(asset.read_bytes(), media_type),
                methods=["GET"],
                name=f"playground:{asset.name}",
            )
    return router


def _responder(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return serve
