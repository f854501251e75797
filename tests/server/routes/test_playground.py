"""The playground page's route (fake engine): served at `/` with its own files and strict
headers, nothing inline and nothing from elsewhere, no key needed for the page itself, off with
FACELLM_PLAYGROUND=false (404 in the error envelope), and every file shipped as package data.
The page at work, in a browser against the real engine: tests/e2e/test_playground.py."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from server.config import Settings
from server.routes.playground import asset_dir, asset_path
from tests.conftest import ROOT, AppClient, MakeClient

ASSETS = sorted(a.name for a in asset_dir().iterdir() if a.is_file())
JS_IMPORT = re.compile(r"""^import\s.*?\sfrom\s+["']([^"']+)["'];""", re.MULTILINE | re.DOTALL)


class PageParts(HTMLParser):
    """What index.html loads, and anything that would run or style inline."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.loads.append(value)
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}=…>")
        if tag == "style":
            self.inline.append("<style>")
        self._in_script = tag == "script" and "src" not in named
        if self._in_script:
            self.inline.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def page_parts() -> PageParts:
    parts = PageParts()
    parts.feed((asset_dir() / "index.html").read_text())
    return parts


async def test_page_at_root_with_strict_headers(client: AppClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    directives = r.headers["content-security-policy"].split(";")
    policy = dict(directive.strip().split(" ", 1) for directive in directives)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "<h1>FaceLLM playground</h1>" in r.text


def test_page_has_nothing_inline() -> None:
    assert page_parts().inline == []


@pytest.mark.parametrize("name", ASSETS)
async def test_every_file_is_served_with_its_type(client: AppClient, name: str) -> None:
    r = await client.get(asset_path(name))
    assert r.status_code == 200
    assert r.content == (asset_dir() / name).read_bytes()
    expected = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg"}
    assert r.headers["content-type"].startswith(expected[name.rsplit(".", 1)[1]])
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_everything_the_page_loads_comes_from_this_server(client: AppClient) -> None:
    """No CDN: the page, and every module its scripts import, is one of the served files."""
    loads = page_parts().loads
    assert loads, "index.html loads nothing?"
    for js in (n for n in ASSETS if n.endswith(".js")):
        imports = JS_IMPORT.findall((asset_dir() / js).read_text())
        loads += [f"/playground/{path.removeprefix('./')}" for path in imports]
    for path in loads:
        assert path.startswith("/playground/"), path
        assert (await client.get(path)).status_code == 200, path
    # …and every file is used: none is left behind when another replaces it.
    assert {path.removeprefix("/playground/") for path in loads} == set(ASSETS) - {"index.html"}


async def test_the_page_needs_no_key_its_calls_do(make_client: MakeClient) -> None:
    async with make_client(api_keys=["k1"]) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/playground/app.js")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401


async def test_off_is_404_in_the_error_envelope(make_client: MakeClient) -> None:
    async with make_client(playground=False) as client:
        for path in ["/", *(asset_path(n) for n in ASSETS)]:
            r = await client.get(path)
            assert r.status_code == 404, path
            assert r.json() == {
                "error": {
                    "message": "Not Found",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "not_found",
                }
            }
        assert (await client.get("/v1/models")).status_code == 200


def test_off_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACELLM_PLAYGROUND", "false")
    assert Settings(model_cache_dir=tmp_path).playground is False
    monkeypatch.delenv("FACELLM_PLAYGROUND")
    assert Settings(model_cache_dir=tmp_path).playground is True


async def test_not_in_the_api_schema(client: AppClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/playground/")]


def test_every_file_ships_as_package_data() -> None:
    """An installed server (the Docker images' `pip install .`) has the page only if
    pyproject's package data names each file."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["server"]
    for name in ASSETS:
        assert any(fnmatch.fnmatch(f"playground/{name}", p) for p in patterns), name
