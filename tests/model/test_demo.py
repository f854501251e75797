"""The demo model: deterministic, cached, atomic, and loadable by plain transformers.

Every test reads the session's one demo model (`demo_model`, tests/conftest.py). The test that
generates with transformers runs a forward pass: it is marked `engine` (not in `make unit`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    InternVLForConditionalGeneration,
)

import model.demo as demo

IMAGE_PART = {"type": "image"}


@pytest.fixture(scope="module")
def tokenizer(demo_model: Path) -> Any:
    return AutoTokenizer.from_pretrained(demo_model)


def _digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def test_build_is_byte_identical_across_processes_and_replaces_a_partial_dir(
    demo_model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"half a model")  # a crashed non-atomic build
    code = "import sys, pathlib, model.demo as d; d.build_demo_model(pathlib.Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, env=env, timeout=240)
    assert _digests(target) == _digests(demo_model)
    assert demo.is_complete(target)


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(demo, "_write_all", crash)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        demo.build_demo_model(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_ensure_reuses_a_complete_build(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(demo_model, tmp_path / "demo")

    def no_rebuild(target: Path) -> Path:
        raise AssertionError(f"rebuilt {target}")

    monkeypatch.setattr(demo, "build_demo_model", no_rebuild)
    assert demo.ensure_demo_model(tmp_path) == (tmp_path / "demo").absolute()


@pytest.mark.parametrize("marker", [None, {"builder_version": 0}, "not json"])
def test_ensure_rebuilds_a_partial_or_outdated_build(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: object
) -> None:
    shutil.copytree(demo_model, tmp_path / "demo")
    marker_path = tmp_path / "demo" / demo.MARKER_FILE
    if marker is None:
        marker_path.unlink()
    else:
        marker_path.write_text(marker if isinstance(marker, str) else json.dumps(marker))
    rebuilt: list[Path] = []
    monkeypatch.setattr(demo, "build_demo_model", lambda target: rebuilt.append(target) or target)
    demo.ensure_demo_model(tmp_path)
    assert rebuilt == [tmp_path / "demo"]


def test_files_mirror_internvl3_hf(demo_model: Path, tokenizer: Any) -> None:
    config = AutoConfig.from_pretrained(demo_model)
    assert config.architectures == ["InternVLForConditionalGeneration"]
    assert config.text_config.model_type == "qwen2"
    text = config.text_config
    assert text.hidden_size // text.num_attention_heads == 64  # vLLM CPU attention head size
    assert len(tokenizer) == text.vocab_size
    assert text.vocab_size % 64 == 0
    assert config.image_token_id == tokenizer.context_image_token_id
    assert tokenizer.start_image_token == "<img>"
    assert tokenizer.end_image_token == "</img>"
    assert tokenizer.video_token == "<video>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    assert GenerationConfig.from_pretrained(demo_model).eos_token_id == im_end
    for name in ("<|endoftext|>", "<|im_start|>", "<IMG_CONTEXT>"):
        assert tokenizer.tokenize(name) == [name]


@pytest.mark.parametrize("images", [0, 1, 3])
def test_chat_template_emits_one_image_token_per_image_part(tokenizer: Any, images: int) -> None:
    messages = [
        {"role": "system", "content": "You analyse faces."},
        {"role": "user", "content": [IMAGE_PART] * images + [{"type": "text", "text": "Age?"}]},
        {"role": "assistant", "content": "About 30."},
        {"role": "user", "content": "And the expression?"},
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.count("<IMG_CONTEXT>") == images
    assert prompt.startswith("<|im_start|>system\nYou analyse faces.<|im_end|>\n")
    assert "<|im_start|>assistant\nAbout 30.<|im_end|>\n" in prompt
    assert prompt.endswith("And the expression?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_without_generation_prompt(tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "hi"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n"


def test_json_answers_tokenise_sanely(tokenizer: Any) -> None:
    answer = (
        '{"age": 34, "expression": "neutral", "glasses": "uncertain", "box": [177, 66, 95, 95]}'
    )
    ids = tokenizer.encode(answer, add_special_tokens=False)
    assert tokenizer.decode(ids) == answer
    assert len(ids) < len(answer) / 2
    for word in ("neutral", "uncertain", "glasses", "female", "none"):
        assert len(tokenizer.tokenize(f'"{word}"')) == 3  # quote, word, quote


@pytest.mark.engine  # a transformers forward pass: `make test`, not `make unit`
def test_transformers_loads_and_generates_from_an_image(demo_model: Path) -> None:
    processor = AutoProcessor.from_pretrained(demo_model)
    vlm = InternVLForConditionalGeneration.from_pretrained(demo_model, dtype=torch.bfloat16)
    messages = [{"role": "user", "content": [IMAGE_PART, {"type": "text", "text": "Describe."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (128, 64), (200, 150, 120))  # 2×1 tiles + thumbnail
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    tiles = inputs["pixel_values"].shape[0]
    assert tiles == 3
    image_tokens = int((inputs["input_ids"] == vlm.config.image_token_id).sum())
    assert image_tokens == 16 * tiles
    with torch.no_grad():
        out = vlm.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_tile_plan_read_from_the_built_processor_config(demo_model: Path) -> None:
    """What the server sizes images by is what the demo's processor really does."""
    from transformers import AutoImageProcessor

    from model.tiles import TilePlan

    plan = TilePlan.from_model_dir(demo_model)
    assert plan == demo.DEMO_TILES == TilePlan(tile=(64, 64), max_tiles=4)
    processor = AutoImageProcessor.from_pretrained(demo_model)
    for size in [(64, 64), (143, 143), (512, 512), (4032, 3024), (3024, 4032), (900, 100)]:
        expected = processor.get_number_of_image_patches(size[1], size[0], {})
        assert plan.tiles(size) == expected, size
