"""The run's helpers and the CLI's failure paths; the full run is in test_facexbench_server."""

import base64
import socket
import time
from pathlib import Path

import openai
import pytest
from PIL import Image

from evals.__main__ import main
from evals.benchmark import load_benchmark
from evals.facexbench import (
    EvalConfig,
    ServerUnavailableError,
    _Asker,
    image_data_url,
    infer_variant,
    normalize_base_url,
)


@pytest.mark.parametrize(
    ("model_id", "variant"),
    [
        ("FaceLLM-1B", "1B"),
        ("Idiap/FaceLLM-8B", "8B"),
        ("facellm-38b", "38B"),
        ("/models/FaceLLM-38B-awq", "38B"),
        ("demo", None),
        ("FaceLLM-2B", None),
        ("InternVL3-1.8B", None),
    ],
)
def test_variant_is_inferred_from_the_model_id(model_id: str, variant: str | None) -> None:
    assert infer_variant(model_id) == variant


@pytest.mark.parametrize(
    "url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"]
)
def test_base_url_takes_the_root_or_v1(url: str) -> None:
    assert normalize_base_url(url) == "http://h:8000/v1"


def test_png_is_sent_as_is_and_other_formats_as_png(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 6), (200, 10, 10))
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.bmp")
    png = image_data_url(tmp_path / "a.png")
    assert (
        png
        == "data:image/png;base64," + base64.b64encode((tmp_path / "a.png").read_bytes()).decode()
    )
    bmp = image_data_url(tmp_path / "b.bmp")
    assert bmp.startswith("data:image/png;base64,iVBOR")  # PNG magic, base64


@pytest.mark.parametrize(
    "bad", [{"concurrency": 0}, {"sample": 0}, {"variant": "2B"}, {"timeout_s": 0}]
)
def test_config_rejects_nonsense(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        EvalConfig(data=tmp_path, **bad)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_fails_fast_when_no_server_listens(
    benchmark_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    code = main(
        [
            "facexbench",
            "--data",
            str(benchmark_dir),
            "--base-url",
            url,
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert time.monotonic() - start < 10
    assert f"cannot reach a FaceLLM server at {url}/v1" in capsys.readouterr().err


def test_cli_explains_a_wrong_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["facexbench", "--data", str(tmp_path), "--no-progress"])
    assert code == 1
    assert "no FaceXBench *.json files" in capsys.readouterr().err


def test_cli_rejects_an_unknown_category(
    benchmark_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["facexbench", "--data", str(benchmark_dir), "--category", "faces"])
    assert code == 1
    assert "unknown category 'faces'" in capsys.readouterr().err


def test_data_without_images_fails_before_any_request(
    benchmark_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for png in benchmark_dir.glob("images/*/*.png"):
        png.unlink()
    code = main(["facexbench", "--data", str(benchmark_dir), "--base-url", "http://127.0.0.1:9"])
    assert code == 1
    assert "no question's images found" in capsys.readouterr().err


async def test_a_lost_connection_aborts_when_the_server_is_gone(benchmark_dir: Path) -> None:
    question = load_benchmark(benchmark_dir)[0]
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    config = EvalConfig(data=benchmark_dir, base_url=url, max_retries=0)
    async with openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0) as client:
        with pytest.raises(ServerUnavailableError, match="went away mid-run"):
            await _Asker(client, "demo", config).ask(question)
