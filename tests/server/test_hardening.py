"""Auth, admission, deadlines, drain switch, request ids and in-band stream errors (fake engine)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from model.engine import EngineDeadError, GenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


@asynccontextmanager
async def serve(settings: Settings, engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


# --- auth --------------------------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# mounted secret\nfile-key\n")
    return Settings(model_cache_dir=tmp_path, api_keys=[SecretStr("k1")], api_keys_file=keys_file)


@pytest.mark.parametrize("header", [None, "Bearer wrong", "k1", "Basic k1", "Bearer "])
async def test_missing_or_wrong_key_is_401(keyed: Settings, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with serve(keyed, FakeEngine()) as client:
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/v1/faces/schema")):
            r = await client.request(method, path, json=chat_body(), headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("key", ["k1", "file-key"])
async def test_right_key_passes_and_probes_need_none(keyed: Settings, key: str) -> None:
    async with serve(keyed, FakeEngine()) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert (await client.post(CHAT, json=chat_body(), headers=auth)).status_code == 200
        for probe in ("/health", "/ready", "/metrics"):
            assert (await client.get(probe)).status_code == 200


# --- admission, deadline, drain ----------------------------------------------------------------


async def test_burst_past_admission_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=tmp_path, max_concurrent_requests=2)
    async with serve(settings, FakeEngine(step_delay_s=0.05)) as client:
        responses = await asyncio.gather(*(client.post(CHAT, json=chat_body()) for _ in range(10)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1
        assert set(statuses) <= {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        scraped = (await client.get("/metrics")).text
        assert f"facellm_admission_rejections_total {statuses.count(429)}.0" in scraped
        assert (await client.post(CHAT, json=chat_body())).status_code == 200  # slots came back


async def test_deadline_gives_504_and_aborts(tmp_path: Path) -> None:
    engine = FakeEngine(step_delay_s=0.5)
    settings = Settings(model_cache_dir=tmp_path, request_timeout_s=0.2)
    async with serve(settings, engine) as client:
        r = await client.post(CHAT, json=chat_body())
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "request_timeout"
        assert engine.aborted and not engine.running


async def test_draining_refuses_new_work_and_fails_readiness(
    client: httpx.AsyncClient, app: object
) -> None:
    app.state.facellm.admission.draining = True  # type: ignore[attr-defined]
    r = await client.post(CHAT, json=chat_body())
    assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200


async def test_dead_engine_fails_liveness_and_requests_get_503(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    fake_engine.dead = True
    assert (await client.get("/health")).status_code == 503
    r = await client.post(CHAT, json=chat_body())
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"


async def test_engine_failure_mid_stream_is_reported_in_band(tmp_path: Path) -> None:
    class DyingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest):  # type: ignore[no-untyped-def,override]
            async for chunk in super()._chunks(request):
                yield chunk
                raise EngineDeadError("gone")

    async with serve(Settings(model_cache_dir=tmp_path), DyingEngine()) as client:
        r = await client.post(CHAT, json=chat_body(stream=True))
        assert r.status_code == 200
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        error = json.loads(frames[-2])["error"]
        assert error["code"] == "engine_unavailable" and "gone" not in error["message"]


# --- request ids, body cap ---------------------------------------------------------------------


async def test_request_id_is_echoed_when_well_formed(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    bad = await client.get("/v1/models", headers={"X-Request-Id": "no spaces\tor tabs!"})
    assert bad.headers["x-request-id"] != "no spaces\tor tabs!"
    assert len(bad.headers["x-request-id"]) == 32


async def test_oversized_body_is_413_in_the_envelope(tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=tmp_path, max_body_bytes=4096)
    async with serve(settings, FakeEngine()) as client:
        r = await client.post(CHAT, json=chat_body())
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert "x-request-id" in r.headers
        assert (
            await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        ).status_code == 200


async def test_images_are_logged_as_digests_and_timed(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = data_url(astronaut())
    with caplog.at_level("INFO"):
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
    (record,) = [r for r in caplog.records if r.name == "server.access"]
    (image,) = record.images  # type: ignore[attr-defined]
    assert (image["width"], image["height"], len(image["sha256_16"])) == (512, 512, 16)
    payload = url.split(",", 1)[1]
    assert not any(payload[:64] in str(r.__dict__) for r in caplog.records)
    scraped = (await client.get("/metrics")).text
    assert "facellm_image_decode_seconds_count 1.0" in scraped
