"""Per-attribute confidence on the real engine: what the definition promises holds for every
attribute of the test images (the demo model's values themselves are meaningless)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from model.attributes import ALL_NAMES, attribute
from tests.conftest import ServerProcess
from tests.images import astronaut, data_url, two_faces

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

IMAGES = {"astronaut": astronaut, "two_faces": two_faces}


@pytest.fixture(scope="module")
def http(real_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_server.base_url, timeout=120) as client:
        yield client


def analyze(http: httpx.Client, image: str, **options: Any) -> list[dict[str, Any]]:
    r = http.post("/v1/faces/analyze", json={"image": image, "confidence": True, **options})
    assert r.status_code == 200, r.text[:500]
    faces: list[dict[str, Any]] = r.json()["faces"]
    return faces


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_confidences_are_probabilities_and_the_greedy_pick_is_the_most_probable(
    http: httpx.Client, name: str
) -> None:
    image = data_url(IMAGES[name]())
    faces = analyze(http, image)
    assert faces
    for face in faces:
        assert set(face["attributes"]) == set(ALL_NAMES)
        for attr, answer in face["attributes"].items():
            allowed = set(attribute(attr).values)
            masses = [answer["confidence"], *(a["confidence"] for a in answer["alternatives"])]
            assert all(0 <= m <= 1 for m in masses), (attr, answer)
            assert sum(masses) == pytest.approx(1, abs=0.01), (attr, answer)  # the whole mass
            assert answer["value"] in allowed and not answer["abstained"]
            assert {a["value"] for a in answer["alternatives"]} <= allowed - {answer["value"]}
            # Greedy decoding (temperature 0): the pick is the most probable value.
            assert answer["confidence"] >= max(masses) - 1e-6, (attr, answer)
    assert analyze(http, image) == faces  # identical requests, identical confidences


def test_a_threshold_above_every_confidence_abstains_everywhere(http: httpx.Client) -> None:
    (face,) = analyze(http, data_url(astronaut()), min_confidence=1.0)
    for attr, answer in face["attributes"].items():
        assert answer["value"] == attribute(attr).abstain, (attr, answer)
        if answer["abstained"]:  # the model's own pick is kept among the alternatives
            assert any(a["value"] != answer["value"] for a in answer["alternatives"])
