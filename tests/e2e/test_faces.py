"""Faces end to end: real server, real vLLM engine with structured outputs, demo model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from model.attributes import prompt
from tests.conftest import ServerProcess
from tests.images import TRUE_ASTRONAUT_FACE, astronaut, cat, data_url, iou, two_faces

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


@pytest.fixture(scope="module")
def http(real_server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=real_server.base_url, timeout=60)


@pytest.fixture(scope="module")
def schema(http: httpx.Client) -> dict[str, object]:
    served: dict[str, object] = http.get("/v1/faces/schema").json()
    return served


def analyze(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/faces/analyze", json=body)


def test_astronaut(http: httpx.Client, schema: dict[str, object]) -> None:
    r = analyze(http, image=data_url(astronaut()))
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    box = face["bbox"]
    assert iou((box["x"], box["y"], box["w"], box["h"]), TRUE_ASTRONAUT_FACE) > 0.5
    jsonschema.validate(face["attributes"], schema)


def test_two_faces_then_max_faces(http: httpx.Client, schema: dict[str, object]) -> None:
    faces = analyze(http, image=data_url(two_faces())).json()["faces"]
    assert len(faces) == 2
    for face in faces:
        jsonschema.validate(face["attributes"], schema)
    assert len(analyze(http, image=data_url(two_faces()), max_faces=1).json()["faces"]) == 1


def test_cat(http: httpx.Client, schema: dict[str, object]) -> None:
    r = analyze(http, image=data_url(cat()))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face_detected"
    whole = analyze(http, image=data_url(cat()), detect=False)
    assert whole.status_code == 200, whole.text
    (face,) = whole.json()["faces"]
    jsonschema.validate(face["attributes"], schema)


def test_same_answer_through_chat_response_format(
    http: httpx.Client, schema: dict[str, object]
) -> None:
    """The README's recipe: the served schema through OpenAI-exact `response_format`. Asked as
    /v1/faces/analyze asks (its prompt, greedy) about a face it would send as is (one tile, no
    detection), chat gives the same answer."""
    face = astronaut().crop((130, 20, 320, 210)).resize((64, 64))  # one demo tile
    url = data_url(face, "PNG")
    analysed = analyze(http, image=url, detect=False)
    assert analysed.status_code == 200, analysed.text
    (expected,) = [f["attributes"] for f in analysed.json()["faces"]]
    properties: dict[str, object] = schema["properties"]  # type: ignore[assignment]
    body = {
        "model": "demo",
        "max_tokens": 256,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": prompt(list(properties))},
                ],
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "face_attributes", "schema": schema, "strict": True},
        },
    }
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    answer = json.loads(r.json()["choices"][0]["message"]["content"])
    jsonschema.validate(answer, schema)
    assert answer == expected
