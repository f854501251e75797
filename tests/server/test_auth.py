"""API keys (server/auth.py): requests need one when keys are set and probes never do; /metrics
needs its own when one is set; a key that cannot work (empty, a blank file, the admin's) stops the
start (fake engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from model.fake_engine import FakeEngine
from server.app import create_app
from server.auth import load_keys
from server.config import ConfigError, Settings
from server.startup import preflight
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"
HI = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


@pytest.fixture
def keyed(tmp_path: Path) -> dict[str, Any]:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# mounted secret\nfile-key\n")
    return {"api_keys": [SecretStr("k1")], "api_keys_file": keys_file}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "k1", "Basic k1", "Bearer "])
async def test_missing_or_wrong_key_is_401(
    make_client: MakeClient, keyed: dict[str, Any], header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with make_client(**keyed) as client:
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/v1/faces/schema")):
            r = await client.request(method, path, json=chat_body(), headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("key", ["k1", "file-key"])
async def test_right_key_passes_and_probes_need_none(
    make_client: MakeClient, keyed: dict[str, Any], key: str
) -> None:
    async with make_client(**keyed) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert (await client.post(CHAT, json=chat_body(), headers=auth)).status_code == 200
        for probe in ("/health", "/ready", "/metrics"):
            assert (await client.get(probe)).status_code == 200


@pytest.mark.parametrize("keys", ['[""]', '["  "]', '["good", "\\t"]'])
def test_an_empty_key_in_the_environment_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str
) -> None:
    """Before: `[""]` made a bare `Authorization: Bearer` a valid key."""
    monkeypatch.setenv("FACELLM_API_KEYS", keys)
    with pytest.raises(ValueError, match=r"api_keys\[\d\] is empty"):
        Settings(model_cache_dir=tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t\n", "# only a comment\n\n"])
def test_a_keys_file_without_a_key_stops_the_start(tmp_path: Path, text: str) -> None:
    """A blank mounted Secret must not turn auth off (before: no keys, every request passed)."""
    keys_file = tmp_path / "keys"
    keys_file.write_text(text)
    settings = Settings(model_cache_dir=tmp_path, api_keys_file=keys_file)
    with pytest.raises(ConfigError, match="holds no API key"):
        preflight(settings)
    with pytest.raises(ConfigError, match="holds no API key"):
        create_app(settings, FakeEngine())


def test_keys_are_stripped_like_the_header(tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=tmp_path, api_keys=[SecretStr(" k1 ")])
    assert load_keys(settings) == (b"k1",)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    ", "bearer"])
async def test_a_bare_bearer_never_passes(make_client: MakeClient, header: str) -> None:
    async with make_client(api_keys=[SecretStr("k1")]) as client:
        r = await client.post(CHAT, json=HI, headers={"Authorization": header})
        assert r.status_code == 401
        ok = await client.post(CHAT, json=HI, headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200


async def test_metrics_are_open_without_a_metrics_key(make_client: MakeClient) -> None:
    async with make_client(api_keys=[SecretStr("k1")]) as client:
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        ("Bearer wrong", 401),
        ("Bearer client-key", 401),  # a client's key is not the scraper's
        ("Basic scrape-key", 401),
        ("Bearer scrape-key", 200),
    ],
)
async def test_metrics_key_is_required_when_set(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, header: str | None, status: int
) -> None:
    monkeypatch.setenv("FACELLM_METRICS_API_KEY", "scrape-key")
    async with make_client(api_keys=[SecretStr("client-key")]) as client:
        headers = {"Authorization": header} if header is not None else {}
        r = await client.get("/metrics", headers=headers)
        assert r.status_code == status, r.text
        if status == 401:
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
        else:
            assert "facellm_requests_in_flight" in r.text
        for probe in ("/health", "/ready"):  # probes stay open
            assert (await client.get(probe)).status_code == 200


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_metrics_key_stops_the_start(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="metrics_api_key is empty"):
        Settings(model_cache_dir=tmp_path, metrics_api_key=SecretStr(key))


def test_the_admin_key_may_not_be_an_api_key(tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=tmp_path, api_keys=["k"], admin_api_key=SecretStr(" k"))
    with pytest.raises(ConfigError, match="differ from every API key"):
        preflight(settings)


def test_the_admin_key_may_not_be_a_key_from_the_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("shared\n")
    settings = Settings(
        model_cache_dir=tmp_path,
        api_keys_file=keys,
        allow_runtime_lora=True,
        admin_api_key=SecretStr("shared"),
    )
    with pytest.raises(ConfigError, match="differ from every API key"):
        preflight(settings)


def test_auth_off_is_a_warning_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="server.app"):
        create_app(Settings(), FakeEngine())
    assert any("auth is off" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="server.app"):
        create_app(Settings(api_keys=[SecretStr("k")]), FakeEngine())
    assert not any("auth is off" in r.getMessage() for r in caplog.records)
