"""Images sized to the model, on the real engine: what `usage.prompt_tokens` says the model saw."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from model import attributes
from model.demo import DEMO_TILES
from tests.conftest import ServerProcess
from tests.images import astronaut, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

TOKENS_PER_TILE = 16  # the demo: 64-px tiles, 8-px patches, pixel shuffle 0.5
PHONE = (4032, 3024)
ASKED = "age_group"


@pytest.fixture(scope="module")
def http(real_server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=real_server.base_url, timeout=120)


def face(side: int) -> Image.Image:
    """The astronaut's face with a FairFace-like margin, at side × side pixels."""
    return astronaut().crop((130, 20, 320, 210)).resize((side, side), Image.Resampling.BICUBIC)


def face_prompt_tokens(http: httpx.Client, image: Image.Image, detect: bool) -> int:
    """The prompt tokens of one question about one face (usage sums faces and questions)."""
    body = {"image": data_url(image), "detect": detect, "max_faces": 1, "attributes": [ASKED]}
    r = http.post("/v1/faces/analyze", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["versions"]["preprocessing"] == "v3:margin=0.25,tile=64x64,tiles=1"
    tokens: int = r.json()["usage"]["prompt_tokens"]
    return tokens


def chat_prompt_tokens(http: httpx.Client, image: Image.Image, text: str, **detail: str) -> int:
    messages = image_message(data_url(image), text)
    messages[0]["content"][0]["image_url"].update(detail)  # type: ignore[index]
    r = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
    assert r.status_code == 200, r.text
    tokens: int = r.json()["usage"]["prompt_tokens"]
    return tokens


def test_a_face_is_one_tile_whatever_its_size(http: httpx.Client) -> None:
    small = face_prompt_tokens(http, face(100), detect=False)
    large = face_prompt_tokens(http, face(1200), detect=False)
    # Found by the detector in a large photo: the crop is cut big, and still sent as one tile.
    detected = face_prompt_tokens(http, astronaut().resize((2400, 2400)), detect=True)
    assert small == large == detected
    prompt = attributes.multiple_choice(ASKED).prompt()
    one_tile = chat_prompt_tokens(http, face(64), prompt, detail="low")
    assert small == one_tile
    # Without the resize the large face would have been tiled like a scene: 4 tiles + thumbnail.
    assert chat_prompt_tokens(http, face(1200), prompt, detail="high") == (
        one_tile + (DEMO_TILES.tiles((1200, 1200)) - 1) * TOKENS_PER_TILE
    )


def test_detail_low_sends_fewer_tokens_than_high_on_a_large_photo(http: httpx.Client) -> None:
    photo = astronaut().resize(PHONE, Image.Resampling.BICUBIC)
    low = chat_prompt_tokens(http, photo, "Describe.", detail="low")
    high = chat_prompt_tokens(http, photo, "Describe.", detail="high")
    auto = chat_prompt_tokens(http, photo, "Describe.")
    assert high - low == (DEMO_TILES.tiles(PHONE) - 1) * TOKENS_PER_TILE > 0
    assert auto == high  # FACELLM_MAX_TILES unset: the model's maximum
