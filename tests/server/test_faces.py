"""/v1/faces/analyze and /v1/faces/schema against the fake engine (fast)."""

from __future__ import annotations

import base64
import re

import httpx
import jsonschema
import pytest

from model.attributes import DEFAULT_NAMES, attribute
from model.engine import GenerationRequest
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import TRUE_ASTRONAUT_FACE, astronaut, cat, data_url, encode, iou, two_faces

URL = "/v1/faces/analyze"


def varied_answer(request: GenerationRequest) -> str:
    """A valid answer unlike the fake engine's default (the first option): the second letter."""
    assert request.sampling.structured and request.sampling.structured.choice
    return request.sampling.structured.choice[1]


async def test_astronaut_has_one_face_with_schema_valid_attributes(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(responder=varied_answer)
    async with make_client(engine) as client:
        r = await client.post(URL, json={"image": data_url(astronaut())})
        assert r.status_code == 200, r.text
        out = r.json()
        schema = (await client.get("/v1/faces/schema")).json()
    (face,) = out["faces"]
    box = face["bbox"]
    assert iou((box["x"], box["y"], box["w"], box["h"]), TRUE_ASTRONAUT_FACE) > 0.5
    assert 0.5 < face["score"] <= 1
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert len(engine.requests) == len(DEFAULT_NAMES)  # one question per attribute
    assert face["attributes"] == {name: attribute(name).values[1] for name in DEFAULT_NAMES}
    jsonschema.validate(face["attributes"], schema)
    assert set(schema["properties"]) == set(DEFAULT_NAMES)
    assert out["versions"]["model"] == "demo"
    assert {"prompt", "schema", "preprocessing"} <= set(out["versions"])
    assert out["usage"]["completion_tokens"] == len(DEFAULT_NAMES)


async def test_perceived_race_is_served_only_when_the_operator_lists_it(
    make_client: MakeClient,
) -> None:
    body = {"image": data_url(astronaut()), "attributes": ["perceived_race"]}
    async with make_client() as client:
        refused = await client.post(URL, json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "attributes.perceived_race"
        assert "perceived_race" not in (await client.get("/v1/faces/schema")).json()["properties"]
    async with make_client(attributes=["perceived_race", "age_group"]) as client:
        served = await client.post(URL, json=body)
        assert served.status_code == 200, served.text
        assert set(served.json()["faces"][0]["attributes"]) == {"perceived_race"}


async def test_raw_base64_is_accepted(client: httpx.AsyncClient) -> None:
    raw = base64.b64encode(encode(astronaut())).decode()
    assert (await client.post(URL, json={"image": raw})).status_code == 200


async def test_faces_go_to_the_engine_as_margin_crops(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    await client.post(URL, json={"image": data_url(two_faces())})
    assert len(fake_engine.requests) == 2 * len(DEFAULT_NAMES)
    for request in fake_engine.requests:
        crop, prompt = request.messages[0].parts
        assert not isinstance(crop, str) and isinstance(prompt, str)
        assert crop.size == (64, 64)  # a face crop at one demo tile, not the scene
        assert request.sampling.structured and request.sampling.structured.choice


async def test_a_large_photo_is_held_reduced_and_boxes_come_back_in_its_coordinates(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    """A 4096² JPEG decodes at half scale; the box still describes the photo that was sent."""
    photo = astronaut().resize((4096, 4096))
    r = await client.post(URL, json={"image": data_url(photo), "max_faces": 1})
    assert r.status_code == 200, r.text
    box = r.json()["faces"][0]["bbox"]
    true_box = tuple(8 * v for v in TRUE_ASTRONAUT_FACE)
    assert iou((box["x"], box["y"], box["w"], box["h"]), true_box) > 0.5  # type: ignore[arg-type]
    for request in fake_engine.requests:
        assert request.messages[0].parts[0].size == (64, 64)  # type: ignore[union-attr]
    assert r.json()["versions"]["preprocessing"] == "v3:margin=0.25,tile=64x64,tiles=1"


async def test_two_faces_and_max_faces(client: httpx.AsyncClient) -> None:
    both = (await client.post(URL, json={"image": data_url(two_faces())})).json()
    assert len(both["faces"]) == 2
    one = (await client.post(URL, json={"image": data_url(two_faces()), "max_faces": 1})).json()
    assert len(one["faces"]) == 1
    assert one["faces"][0]["bbox"] == both["faces"][0]["bbox"]  # the largest face first


async def test_cat_has_no_face_unless_detection_is_off(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json={"image": data_url(cat())})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face_detected"
    whole = await client.post(URL, json={"image": data_url(cat()), "detect": False})
    assert whole.status_code == 200
    (face,) = whole.json()["faces"]
    assert face["bbox"] == {"x": 0, "y": 0, "w": cat().width, "h": cat().height}


async def test_attribute_subset(client: httpx.AsyncClient) -> None:
    body = {"image": data_url(astronaut()), "attributes": ["eyewear", "age_group"]}
    out = (await client.post(URL, json=body)).json()
    assert set(out["faces"][0]["attributes"]) == {"eyewear", "age_group"}


@pytest.mark.parametrize("attributes", [["favourite_colour"], []])
async def test_unknown_or_empty_attribute_request_is_400(
    client: httpx.AsyncClient, attributes: list[str]
) -> None:
    r = await client.post(URL, json={"image": data_url(astronaut()), "attributes": attributes})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "attribute_not_served"


async def test_disabled_attribute_vanishes_everywhere(
    make_client: MakeClient, fake_engine: FakeEngine
) -> None:
    enabled = ["age_group", "head_pose", "eyewear"]
    async with make_client(fake_engine, attributes=enabled) as client:
        schema = (await client.get("/v1/faces/schema")).json()
        assert set(schema["properties"]) == {"age_group", "head_pose", "eyewear"}
        out = (await client.post(URL, json={"image": data_url(astronaut())})).json()
        assert set(out["faces"][0]["attributes"]) == {"age_group", "head_pose", "eyewear"}
        assert len(fake_engine.requests) == 3  # nothing asked about the others
        refused = await client.post(
            URL, json={"image": data_url(astronaut()), "attributes": ["perceived_gender"]}
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "attributes.perceived_gender"


@pytest.mark.parametrize("answer", ["Z", "ancient", "not-a-letter"])
async def test_invalid_engine_answer_is_a_clear_error_never_a_200(
    make_client: MakeClient, answer: str
) -> None:
    def responder(_: GenerationRequest) -> str:
        return answer

    async with make_client(FakeEngine(responder=responder)) as client:
        r = await client.post(URL, json={"image": data_url(astronaut())})
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "invalid_model_answer"
        assert answer not in r.text
        scraped = (await client.get("/metrics")).text
        failures = re.search(r"^facellm_answer_validation_failures_total (\S+)$", scraped, re.M)
        assert failures and float(failures.group(1)) >= 1  # questions may fail together


async def test_openapi_documents_faces_with_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/faces/analyze" in spec["paths"] and "/v1/faces/schema" in spec["paths"]
    request_schema = spec["components"]["schemas"]["FaceAnalysisRequest"]
    assert request_schema["examples"][0]["detect"] is True
