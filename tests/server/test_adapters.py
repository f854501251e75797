"""LoRA adapters over the fake engine: chosen by `model`, listed with `parent`, counted per
model, and loaded at runtime only with the admin key (fast; the real engine: tests/e2e)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from model.adapters import AdapterTable
from model.demo import build_demo_adapter
from model.engine import Adapter, AdapterError, UnknownAdapter
from model.fake_engine import FakeEngine
from model.weights import WeightsNotFound, resolve_adapter
from server.app import create_app
from server.config import Settings
from tests.images import astronaut, data_url

CHAT = "/v1/chat/completions"
LOAD, UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
ADMIN, USER = "admin-key", "user-key"


def hi(model: str | None) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_adapter(tmp_path_factory.mktemp("adapters") / "a", seed=1)


@asynccontextmanager
async def serve(
    settings: Settings, engine: FakeEngine | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine or FakeEngine())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def admin_settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        model_cache_dir=tmp_path,
        allow_runtime_lora=True,
        admin_api_key=SecretStr(ADMIN),
        api_keys=[SecretStr(USER)],
        **extra,  # type: ignore[arg-type]
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_adapter_is_a_model_with_a_parent_chosen_by_name(
    tmp_path: Path, adapter_dir: Path
) -> None:
    engine = FakeEngine()
    await engine.load_adapter(Adapter("smiles", adapter_dir))
    async with serve(Settings(model_cache_dir=tmp_path), engine) as client:
        models = (await client.get("/v1/models")).json()["data"]
        assert [(m["id"], m["parent"]) for m in models] == [("demo", None), ("smiles", "demo")]

        r = await client.post(CHAT, json=hi("smiles"))
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "smiles"
        assert engine.requests[-1].adapter == "smiles"
        await client.post(CHAT, json=hi("demo"))
        assert engine.requests[-1].adapter is None

        missing = await client.post(CHAT, json=hi("frowns"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        assert "'demo', 'smiles'" in missing.json()["error"]["message"]

        text = (await client.get("/metrics")).text
        assert 'facellm_model_requests_total{model="smiles",route="/v1/chat/completions"} 1.0' in (
            text
        )
        assert 'facellm_model_requests_total{model="demo",route="/v1/chat/completions"} 1.0' in (
            text
        )


async def test_faces_through_an_adapter_name_it_in_versions(
    tmp_path: Path, adapter_dir: Path
) -> None:
    engine = FakeEngine()
    await engine.load_adapter(Adapter("smiles", adapter_dir))
    async with serve(Settings(model_cache_dir=tmp_path), engine) as client:
        body = {"image": data_url(astronaut()), "model": "smiles"}
        out = (await client.post("/v1/faces/analyze", json=body)).json()
        assert out["model"] == "smiles"
        assert out["versions"]["model"] == "demo"
        assert out["versions"]["adapter"] == "smiles"
        assert {r.adapter for r in engine.requests} == {"smiles"}
        plain = (await client.post("/v1/faces/analyze", json={"image": body["image"]})).json()
        assert plain["versions"]["adapter"] is None


async def test_runtime_endpoints_are_absent_unless_allowed(tmp_path: Path) -> None:
    async with serve(Settings(model_cache_dir=tmp_path)) as client:
        r = await client.post(LOAD, json={"lora_name": "x", "lora_path": "demo-lora-1"})
        assert r.status_code == 404


async def test_runtime_load_needs_the_admin_key_not_a_user_key(tmp_path: Path) -> None:
    body = {"lora_name": "smiles", "lora_path": "demo-lora-1"}
    async with serve(admin_settings(tmp_path)) as client:
        for headers in ({}, bearer(USER), bearer("guess")):
            assert (await client.post(LOAD, json=body, headers=headers)).status_code == 401
        models = await client.get("/v1/models", headers=bearer(USER))
        assert [m["id"] for m in models.json()["data"]] == ["demo"]

        r = await client.post(LOAD, json=body, headers=bearer(ADMIN))
        assert r.status_code == 200, r.text
        assert r.text == "Success: LoRA adapter 'smiles' added successfully."
        assert (await client.post(CHAT, json=hi("smiles"), headers=bearer(USER))).status_code == 200
        # The admin key opens only the admin endpoints.
        assert (
            await client.post(CHAT, json=hi("smiles"), headers=bearer(ADMIN))
        ).status_code == 401

        again = await client.post(LOAD, json=body, headers=bearer(ADMIN))
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "adapter_not_loaded"
        replaced = await client.post(
            LOAD, json={**body, "load_inplace": True}, headers=bearer(ADMIN)
        )
        assert replaced.status_code == 200, replaced.text

        gone = await client.post(UNLOAD, json={"lora_name": "smiles"}, headers=bearer(ADMIN))
        assert gone.status_code == 200, gone.text
        assert (await client.post(CHAT, json=hi("smiles"), headers=bearer(USER))).status_code == 404
        twice = await client.post(UNLOAD, json={"lora_name": "smiles"}, headers=bearer(ADMIN))
        assert twice.status_code == 404
        assert twice.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("nowhere", "/no/such/dir"),
        ("bad name!", "demo-lora-1"),
        ("demo", "demo-lora-1"),  # the base model's name
    ],
)
async def test_a_bad_runtime_load_is_a_clear_400(tmp_path: Path, name: str, path: str) -> None:
    async with serve(admin_settings(tmp_path)) as client:
        body = {"lora_name": name, "lora_path": path}
        r = await client.post(LOAD, json=body, headers=bearer(ADMIN))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "adapter_not_loaded"
        assert "Traceback" not in error["message"]
        assert [
            m["id"] for m in (await client.get("/v1/models", headers=bearer(USER))).json()["data"]
        ] == ["demo"]


def test_a_rank_above_the_limit_is_refused(adapter_dir: Path) -> None:
    table = AdapterTable("demo", max_rank=1)
    with pytest.raises(AdapterError, match="rank 8, above max_lora_rank 1"):
        table.admit(Adapter("smiles", adapter_dir))
    with pytest.raises(AdapterError, match="not enabled"):
        AdapterTable("demo", max_rank=None).admit(Adapter("smiles", adapter_dir))


def test_ids_are_never_reused(adapter_dir: Path) -> None:
    """vLLM caches adapter weights by id: a name loaded again must get a fresh one."""
    table = AdapterTable("demo", max_rank=16)
    first = table.admit(Adapter("a", adapter_dir))
    table.add(Adapter("a", adapter_dir), first)
    table.remove("a")
    second = table.admit(Adapter("a", adapter_dir))
    assert second != first
    with pytest.raises(UnknownAdapter):
        table.get("a")


def test_demo_adapters_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = resolve_adapter("a", "demo-lora-1", cache_dir=tmp_path / "x", allow_download=False)
    b = build_demo_adapter(tmp_path / "y", seed=1)
    c = build_demo_adapter(tmp_path / "z", seed=2)
    weights = "adapter_model.safetensors"
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    assert (a / weights).read_bytes() != (c / weights).read_bytes()


def test_a_directory_without_an_adapter_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match=r"holds no adapter_config\.json"):
        resolve_adapter("x", str(tmp_path), cache_dir=tmp_path, allow_download=False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"allow_runtime_lora": True}, "needs admin_api_key"),
        ({"admin_api_key": "k", "api_keys": ["k"]}, "differ from every API key"),
        ({"max_lora_rank": 4}, "max_lora_rank must be one of"),
        ({"lora_adapters": {" ": "demo-lora-1"}}, "non-empty name"),
    ],
)
def test_lora_settings_that_cannot_work_stop_the_start(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**settings)  # type: ignore[arg-type]


def test_the_admin_key_may_not_be_a_key_from_the_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("shared\n")
    settings = Settings(
        model_cache_dir=tmp_path,
        api_keys_file=keys,
        allow_runtime_lora=True,
        admin_api_key=SecretStr("shared"),
    )
    with pytest.raises(ValueError, match="differ from every API key"):
        create_app(settings, FakeEngine())
