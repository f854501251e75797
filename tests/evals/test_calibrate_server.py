"""`facellm-eval calibrate` over HTTP on 127.0.0.1: against a stub server whose answers (and
failures) are scripted, so every number is known, and end to end against the real app with a
fake engine.

Each synthetic face carries its index in the colour of its top-left quarter, which survives the
server's resize to the model's tile, so both servers know which face they were sent.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from PIL import Image

from evals.__main__ import main
from evals.calibration import run_calibrate
from evals.calibration.fairface import ATTRIBUTES, LabelError
from evals.calibration.records import RECORDS_FILE
from evals.client import EvalError
from model import attributes as attrs
from model.engine import GenerationRequest, TokenLogprob
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.images import astronaut
from tests.uvicorn_thread import serve_in_thread

STUB_MODEL = "stub-model"

# FairFace labels (file order) and the model's answers: (value, confidence) per attribute.
LABELS = [
    ("20-29", "Male", "White"),
    ("3-9", "Female", "Black"),
    ("more than 70", "Female", "East Asian"),
    ("0-2", "Male", "White"),
    ("10-19", "Male", "Latino_Hispanic"),
    ("10-19", "Female", "White"),
]
ANSWERS: list[dict[str, tuple[str, float]]] = [
    {"age_group": (age, conf), "perceived_gender": (gender, 0.9), "perceived_race": ("white", 0.5)}
    for (age, conf), gender in zip(
        [
            ("30-39", 0.1),
            ("3-9", 0.4),
            ("70+", 0.6),
            ("0-2", 0.7),
            ("10-19", 0.8),
            ("uncertain", 1.0),
        ],
        ["male", "female", "female", "male", "male", "female"],
        strict=True,
    )
]
# With --bins 3, as worked out by hand in test_calibrate.py: age_group is 4/6 right with
# ECE 16/60; perceived_gender 6/6 right at 0.9 (ECE 0.1); perceived_race 3/6 right at 0.5 (ECE 0).
EXPECTED = {
    "age_group": (0.6667, 0.2667),
    "perceived_gender": (1.0, 0.1),
    "perceived_race": (0.5, 0.0),
}


def face_image(index: int) -> Image.Image:
    face = astronaut().crop((130, 20, 320, 210)).resize((128, 128))
    face.paste((40 * index + 20, 0, 0), (0, 0, 64, 64))
    return face


def face_index(image: Image.Image) -> int:
    red = image.convert("RGB").getpixel((4, 4))
    assert isinstance(red, tuple)
    return round((red[0] - 20) / 40)


def write_dataset(root: Path, faces: int = len(LABELS)) -> Path:
    """A FairFace-layout folder: labels CSV (with FairFace's extra column) and val/ images."""
    (root / "val").mkdir(parents=True)
    rows = ["file,age,gender,race,service_test"]
    for i, (age, gender, race) in enumerate(LABELS[:faces]):
        face_image(i).save(root / "val" / f"{i}.png")
        rows.append(f"val/{i}.png,{age},{gender},{race},True")
    csv = root / "fairface_label_val.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv


def serve(app: Any) -> AbstractContextManager[str]:
    return serve_in_thread(app)


# --- a scripted stub server ----------------------------------------------------------------------


def entry(value: str, confidence: float) -> dict[str, Any]:
    return {"value": value, "confidence": confidence, "abstained": False, "alternatives": []}


def stub_answer(index: int) -> dict[str, Any]:
    answer = {name: entry(*pick) for name, pick in ANSWERS[index].items()}
    if index == 3:  # an abstention (should not happen at min_confidence 0): scored as the pick
        answer["perceived_race"] = {
            "value": "uncertain",
            "confidence": 0.5,
            "abstained": True,
            "alternatives": [
                {"value": "white", "confidence": 0.5},
                {"value": "black", "confidence": 0.3},
            ],
        }
    return answer


def error(status: int, message: str, param: str | None = None, **headers: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "x", "param": param, "code": "x"}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Stub:
    """Answers from ANSWERS; `faults[i]` are what face i's first attempts get instead."""

    faults: dict[int, list[str]] = field(default_factory=dict)
    # "refuse": every request refused as today's server does; "plain": `confidence` ignored
    without: str | None = None
    hits: Counter[int] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def respond(self, body: dict[str, Any]) -> Any:
        image = base64.b64decode(body["image"].split(",", 1)[1])
        index = face_index(Image.open(io.BytesIO(image)))
        self.hits[index] += 1
        self.bodies.append({k: v for k, v in body.items() if k != "image"})
        fault = self.faults.get(index, [])
        kind = fault.pop(0) if fault else None
        if kind == "503":
            return error(503, "engine busy")  # no Retry-After: the client's own backoff
        if kind == "429":
            return error(429, "too many requests", **{"retry-after-ms": "10"})
        if kind == "slow":
            await asyncio.sleep(1.0)  # past the client's timeout
        if kind == "400":
            return error(400, "cannot decode the image", "image")
        if self.without == "refuse":
            return error(400, "Invalid request at 'confidence': Extra inputs", "confidence")
        attributes = stub_answer(index)
        if self.without == "plain":
            attributes = {k: v["value"] for k, v in attributes.items()}
        face = {"bbox": {"x": 0, "y": 0, "w": 128, "h": 128}, "score": 1.0}
        return {"faces": [{**face, "attributes": attributes}], "model": STUB_MODEL}

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            card = {"id": STUB_MODEL, "object": "model", "created": 0, "owned_by": "test"}
            return {"object": "list", "data": [card]}

        @app.post("/v1/faces/analyze")
        async def analyze(body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
            return await self.respond(body)

        return app


def scores_of(report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {k: (v["accuracy"], v["ece"]) for k, v in report["attributes"].items()}


def test_scores_are_exact_through_retries(tmp_path: Path) -> None:
    csv = write_dataset(tmp_path / "fairface")
    stub = Stub(faults={1: ["slow"], 2: ["503"], 4: ["429"]})
    out = tmp_path / "out"
    with serve(stub.app()) as url:
        run = run_calibrate(
            csv, url, out=out, bins=3, concurrency=3, timeout_s=0.5, max_retries=2, progress=False
        )
    assert run.asked == 6
    assert stub.hits == {0: 1, 1: 2, 2: 2, 3: 1, 4: 2, 5: 1}  # each fault retried once
    for body in stub.bodies:
        assert body == {
            "model": STUB_MODEL,
            "detect": False,
            "confidence": True,
            "min_confidence": 0,
            "attributes": list(ATTRIBUTES),
        }
    assert scores_of(run.report) == EXPECTED
    assert run.report["errors"] == [] and run.report["missing"] == []
    assert run.report["attributes"]["age_group"]["abstain_answers"] == 1
    records = [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]
    assert len(records) == 18
    assert {
        "file": "val/2.png",
        "attribute": "age_group",
        "label": "70+",
        "predicted": "70+",
        "confidence": 0.6,
    }.items() <= next(
        r for r in records if r["file"] == "val/2.png" and r["attribute"] == "age_group"
    ).items()
    for name in ("report.md", "report.json", *(f"reliability-{a}.png" for a in ATTRIBUTES)):
        assert (out / name).stat().st_size > 0


def test_an_interrupted_run_resumes_and_the_cli_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_dataset(tmp_path / "fairface")
    stub = Stub(faults={5: ["400"]})
    out = tmp_path / "out"
    args = ["calibrate", "--data", str(csv), "--out", str(out), "--bins", "3", "--no-progress"]
    with serve(stub.app()) as url:
        first = run_calibrate(csv, url, out=out, bins=3, progress=False)
        assert first.report["errors"] == [
            {"file": "val/5.png", "error": "HTTP 400: cannot decode the image"}
        ]
        assert first.report["attributes"]["age_group"]["count"] == 5
        assert "- `val/5.png`: HTTP 400: cannot decode the image" in (out / "report.md").read_text()
        code = main([*args, "--base-url", url])
    assert code == 0
    assert stub.hits == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2}  # only the failed face again
    report = json.loads((out / "report.json").read_text())
    assert scores_of(report) == EXPECTED
    assert report["errors"] == []
    printed = capsys.readouterr().out
    assert f"Calibration {STUB_MODEL}: age_group accuracy 0.667 ECE 0.267 (n=6)" in printed


@pytest.mark.parametrize(
    ("stub", "message"),
    [
        (Stub(without="refuse"), "refused the request option 'confidence'"),
        (Stub(without="plain"), "ignored `confidence: true`"),
    ],
)
def test_a_server_without_confidence_stops_the_run_at_once(
    tmp_path: Path, stub: Stub, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_dataset(tmp_path / "fairface")
    args = ["calibrate", "--data", str(csv), "--out", str(tmp_path / "out"), "--no-progress"]
    with serve(stub.app()) as url:
        code = main([*args, "--base-url", url, "--concurrency", "1"])
        with pytest.raises(EvalError, match=message):
            run_calibrate(csv, url, out=tmp_path / "out2", concurrency=1, progress=False)
    assert code == 1
    assert message in capsys.readouterr().err
    assert sum(stub.hits.values()) == 2  # one face per run, not all six


def test_a_wrong_images_dir_fails_before_asking(tmp_path: Path) -> None:
    csv = write_dataset(tmp_path / "fairface")
    with pytest.raises(LabelError, match="no image found under"):
        run_calibrate(csv, "http://127.0.0.1:9", images_dir=tmp_path, progress=False)


# --- the real app, with a fake engine ------------------------------------------------------------


class ColourTokens:
    """The engine's answer to each question, found by the colour code of the image it is shown
    and the attribute the question asks about: the ANSWERS' value as its option letter, whose
    probability is the answer's confidence, as a grammar-constrained engine would report it."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, request: GenerationRequest) -> list[TokenLogprob]:
        (message,) = request.messages
        image, prompt = message.parts
        assert not isinstance(image, str)
        index = face_index(image)
        (name,) = [n for n in ATTRIBUTES if attrs.multiple_choice(n).prompt() == prompt]
        if name == ATTRIBUTES[0]:
            self.seen.append(index)  # once per face
        value, confidence = ANSWERS[index][name]
        letter = attrs.multiple_choice(name).letters[attrs.attribute(name).values.index(value)]
        logprob = math.log(confidence)
        return [TokenLogprob(letter, logprob, ((letter, logprob),))]


def test_calibrate_end_to_end_through_the_real_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's confidences come from the fake engine's token probabilities, so the
    report's accuracy and ECE must be the figures worked out by hand (EXPECTED, 3 bins)."""
    csv = write_dataset(tmp_path / "fairface")
    tokens = ColourTokens()
    engine = FakeEngine(model_name="FaceLLM-8B", tokens=tokens)
    settings = Settings(model_cache_dir=tmp_path / "cache", attributes=list(attrs.ALL_NAMES))
    app = create_app(settings, engine)
    out = tmp_path / "out"
    args = ["calibrate", "--data", str(csv), "--out", str(out), "--no-progress", "--bins", "3"]
    with serve(app) as url:
        code = main([*args, "--base-url", url, "--concurrency", "2"])
    assert code == 0, capsys.readouterr().err
    assert sorted(set(tokens.seen)) == list(range(6))
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "FaceLLM-8B"
    assert scores_of(report) == EXPECTED  # the report rounds to 4 places
    records = [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]
    assert len(records) == 18
    for r in records:
        value, confidence = ANSWERS[int(Path(r["file"]).stem)][r["attribute"]]
        assert (r["predicted"], r["confidence"]) == (value, pytest.approx(confidence))
    for attribute in ATTRIBUTES:
        assert (out / f"reliability-{attribute}.png").read_bytes().startswith(b"\x89PNG")
    assert "Calibration FaceLLM-8B: age_group accuracy 0.667 ECE 0.267" in capsys.readouterr().out
