"""LoRA fine-tunes on the real engine: the base model and two demo adapters served at once by
one engine, each answering differently; faces through an adapter; runtime loads only with the
admin key. On the session's keyed server, which serves the two adapters."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from server.metrics import SCRAPE_CACHE_S
from tests.conftest import ADMIN_KEY, KEYED_ADAPTERS, KEYS, ServerProcess
from tests.images import astronaut, data_url

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

CHAT = "/v1/chat/completions"
USER_AUTH = {"Authorization": f"Bearer {KEYS[0]}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def http(keyed_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_server.base_url, timeout=120, headers=USER_AUTH) as client:
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


def face_a_chats(http: httpx.Client) -> float:
    """face-a's chat requests so far, by /metrics (the server is shared: counted as a change)."""
    label = r'model="face-a",route="/v1/chat/completions"'
    found = re.search(rf"^facellm_model_requests_total\{{{label}\}} (\S+)$", scrape(http), re.M)
    return float(found.group(1)) if found else 0.0


def scrape(http: httpx.Client) -> str:
    time.sleep(SCRAPE_CACHE_S + 0.1)
    return http.get("/metrics").text


def test_base_and_two_adapters_are_served_by_one_engine(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in models][:3] == [
        ("demo", None),
        *((name, "demo") for name in KEYED_ADAPTERS),
    ]
    before = face_a_chats(http)
    answers = {model: greedy(http, model) for model in ("demo", *KEYED_ADAPTERS)}
    assert len(set(answers.values())) == 3, answers
    assert greedy(http, "face-a") == answers["face-a"]  # greedy: the adapter, not chance
    assert face_a_chats(http) - before == 2


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
    # Unloaded, so the shared server's model list is what its settings say again.
    r = http.post("/v1/unload_lora_adapter", json={"lora_name": "face-c"}, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text[:500]
