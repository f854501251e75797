"""LoRA adapters over HTTP, on the fake engine: chosen by `model`, listed with `parent`, counted
per model, and loaded at runtime (server/routes/adapters.py) only with the admin key (fast; the
real engine: tests/e2e/test_lora.py; the adapter table itself: tests/model/test_adapters.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from model.engine import Adapter
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url

CHAT = "/v1/chat/completions"
LOAD, UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
ADMIN, USER = "admin-key", "user-key"
# Runtime LoRA on, behind the admin key, beside one user key.
ADMIN_SETTINGS: dict[str, Any] = {
    "allow_runtime_lora": True,
    "admin_api_key": SecretStr(ADMIN),
    "api_keys": [SecretStr(USER)],
}


def hi(model: str | None) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_adapter_is_a_model_with_a_parent_chosen_by_name(
    make_client: MakeClient, demo_adapter: Path
) -> None:
    engine = FakeEngine()
    await engine.load_adapter(Adapter("smiles", demo_adapter))
    async with make_client(engine) as client:
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
    make_client: MakeClient, demo_adapter: Path
) -> None:
    engine = FakeEngine()
    await engine.load_adapter(Adapter("smiles", demo_adapter))
    async with make_client(engine) as client:
        body = {"image": data_url(astronaut()), "model": "smiles"}
        out = (await client.post("/v1/faces/analyze", json=body)).json()
        assert out["model"] == "smiles"
        assert out["versions"]["model"] == "demo"
        assert out["versions"]["adapter"] == "smiles"
        assert {r.adapter for r in engine.requests} == {"smiles"}
        plain = (await client.post("/v1/faces/analyze", json={"image": body["image"]})).json()
        assert plain["versions"]["adapter"] is None


async def test_runtime_endpoints_are_absent_unless_allowed(make_client: MakeClient) -> None:
    async with make_client() as client:
        r = await client.post(LOAD, json={"lora_name": "x", "lora_path": "demo-lora-1"})
        assert r.status_code == 404


async def test_runtime_load_needs_the_admin_key_not_a_user_key(make_client: MakeClient) -> None:
    body = {"lora_name": "smiles", "lora_path": "demo-lora-1"}
    async with make_client(**ADMIN_SETTINGS) as client:
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
async def test_a_bad_runtime_load_is_a_clear_400(
    make_client: MakeClient, name: str, path: str
) -> None:
    async with make_client(**ADMIN_SETTINGS) as client:
        body = {"lora_name": name, "lora_path": path}
        r = await client.post(LOAD, json=body, headers=bearer(ADMIN))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "adapter_not_loaded"
        assert "Traceback" not in error["message"]
        assert [
            m["id"] for m in (await client.get("/v1/models", headers=bearer(USER))).json()["data"]
        ] == ["demo"]
