"""Faces end to end: real server, real vLLM engine, demo model. Each attribute is one
multiple-choice question answered with one constrained letter; a face's questions share the
image prefix in vLLM's cache."""

from __future__ import annotations

import re
import time

import httpx
import jsonschema
import pytest
from PIL import Image

from model.attributes import ALL_NAMES, attribute, multiple_choice
from tests.conftest import PREFIX_BLOCK_TOKENS, ServerProcess
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
    assert 0.5 < face["score"] <= 1
    for point in face["landmarks"].values():
        assert box["x"] <= point["x"] <= box["x"] + box["w"]
        assert box["y"] <= point["y"] <= box["y"] + box["h"]
    jsonschema.validate(face["attributes"], schema)


def test_nine_attributes_cost_nine_tokens_a_face_and_answer_the_same_twice(
    http: httpx.Client,
) -> None:
    body = {"image": data_url(two_faces()), "attributes": list(ALL_NAMES)}
    first = analyze(http, **body)
    assert first.status_code == 200, first.text
    out = first.json()
    assert len(ALL_NAMES) == 9 and len(out["faces"]) == 2
    assert out["usage"]["completion_tokens"] == 9 * 2  # one letter per attribute and face
    for face in out["faces"]:
        assert set(face["attributes"]) == set(ALL_NAMES)
    again = analyze(http, **body).json()
    assert again["faces"] == out["faces"]


def test_cat(http: httpx.Client, schema: dict[str, object]) -> None:
    r = analyze(http, image=data_url(cat()))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face_detected"
    whole = analyze(http, image=data_url(cat()), detect=False)
    assert whole.status_code == 200, whole.text
    (face,) = whole.json()["faces"]
    assert face["landmarks"] is None and face["score"] == 1.0
    jsonschema.validate(face["attributes"], schema)


def prefix_cache_hits(http: httpx.Client) -> float:
    """vLLM's prefix-cache hits (tokens), as /metrics says once its 1-s cache has passed."""
    time.sleep(1.1)
    text = http.get("/metrics").text
    return sum(
        float(value)
        for value in re.findall(r"^vllm:prefix_cache_hits_total\{.*\} (\S+)$", text, re.M)
    )


def test_the_questions_of_a_face_reuse_its_image_prefix(http: httpx.Client) -> None:
    """A face no earlier request showed (so nothing is cached before it): every question after
    the first finds the prompt's leading block — template and image — already computed."""
    unseen = Image.new("RGB", (64, 64), (int(time.time() * 1000) % 251, 120, 60))
    unseen.paste(astronaut().crop((150, 40, 300, 190)).resize((48, 48)), (8, 8))
    before = prefix_cache_hits(http)
    r = analyze(http, image=data_url(unseen, "PNG"), detect=False, attributes=list(ALL_NAMES))
    assert r.status_code == 200, r.text
    reused = prefix_cache_hits(http) - before
    assert reused >= (len(ALL_NAMES) - 1) * PREFIX_BLOCK_TOKENS, reused


def test_the_endpoint_question_through_chat_gives_the_same_letter(http: httpx.Client) -> None:
    """Asked through plain chat completions as /v1/faces/analyze asks it (the crop, the
    question, one constrained letter, greedy), the model gives the same answer."""
    face = astronaut().crop((130, 20, 320, 210)).resize((64, 64))  # one demo tile
    url = data_url(face, "PNG")
    analysed = analyze(http, image=url, detect=False, attributes=["age_group"])
    assert analysed.status_code == 200, analysed.text
    (expected,) = [f["attributes"]["age_group"] for f in analysed.json()["faces"]]
    choice = multiple_choice("age_group")
    body = {
        "model": "demo",
        "max_tokens": 1,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": choice.prompt()},
                ],
            }
        ],
        "structured_outputs": {"choice": list(choice.letters)},
    }
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    letter = r.json()["choices"][0]["message"]["content"]
    assert attribute("age_group").values[choice.index(letter)] == expected
