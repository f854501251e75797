"""LoRA fine-tunes on the real engine: the base model and two demo adapters served at once by
one engine, each answering differently; faces through an adapter; runtime loads only with the
admin key. One server of its own (LoRA sizes the engine's buffers at start)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.images import astronaut, data_url

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

CHAT = "/v1/chat/completions"
ADMIN, USER = "lora-admin-key", "lora-user-key"
USER_AUTH = {"Authorization": f"Bearer {USER}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("lora") / "server.log"
    server = start_server(
        log,
        lora_adapters=json.dumps({"face-a": "demo-lora-1", "face-b": "demo-lora-2"}),
        max_loras="2",
        max_lora_rank="8",
        allow_runtime_lora="true",
        admin_api_key=ADMIN,
        api_keys=json.dumps([USER]),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(lora_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lora_server.base_url, timeout=120, headers=USER_AUTH) as client:
        yield client


def greedy(http: httpx.Client, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Describe the face in the photo."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["model"] == model
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


def test_base_and_two_adapters_are_served_by_one_engine(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in models] == [
        ("demo", None),
        ("face-a", "demo"),
        ("face-b", "demo"),
    ]
    answers = {model: greedy(http, model) for model in ("demo", "face-a", "face-b")}
    assert len(set(answers.values())) == 3, answers
    assert greedy(http, "face-a") == answers["face-a"]  # greedy: the adapter, not chance
    metrics = http.get("/metrics").text
    assert 'facellm_model_requests_total{model="face-a",route="/v1/chat/completions"} 2.0' in (
        metrics
    )


def test_faces_through_an_adapter(http: httpx.Client) -> None:
    r = http.post("/v1/faces/analyze", json={"image": data_url(astronaut()), "model": "face-b"})
    assert r.status_code == 200, r.text[:500]
    out = r.json()
    assert out["model"] == "face-b"
    assert out["versions"]["adapter"] == "face-b" and out["versions"]["model"] == "demo"
    assert len(out["faces"]) == 1


def test_runtime_load_needs_the_admin_key(http: httpx.Client) -> None:
    body = {"lora_name": "face-c", "lora_path": "demo-lora-3"}
    assert http.post("/v1/load_lora_adapter", json=body).status_code == 401  # a user's key
    r = http.post("/v1/load_lora_adapter", json=body, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text[:500]
    answer = greedy(http, "face-c")
    assert answer != greedy(http, "demo")

    r = http.post("/v1/unload_lora_adapter", json={"lora_name": "face-c"}, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text[:500]
    gone = http.post(CHAT, json={"model": "face-c", "messages": [{"role": "user", "content": "x"}]})
    assert gone.status_code == 404
    # Loaded again under the same name: a fresh id, the same weights, the same answer.
    r = http.post("/v1/load_lora_adapter", json=body, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text[:500]
    assert greedy(http, "face-c") == answer
