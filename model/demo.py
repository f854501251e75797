"""The demo model: FaceLLM's exact architecture at toy size, built offline in seconds.

InternVL3 in Hugging Face format (InternViT-style vision tower, pixel-shuffle projector, Qwen2 text
model) with random weights and a byte-level BPE tokenizer trained here on generated face/JSON text.
Its answers are meaningless, but it loads through the same code paths as the real weights (vLLM,
transformers, the InternVL processor), so every test and the `demo` model setting exercises the real
serving stack without a GPU or a model hub. Files mirror `OpenGVLab/InternVL3-1B-hf`: same special
tokens, tokenizer attributes, chat template and processor classes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from model.tiles import TilePlan

# Bump when anything below changes the built files; cached builds of other versions are rebuilt.
DEMO_BUILDER_VERSION = 1
MARKER_FILE = "facellm_demo.json"

_SEED = 0
_VOCAB_SIZE = 1024  # BPE target including specials; the model's vocab is padded to a multiple of 64
_TILE = 64  # image tile side, pixels
_PATCH = 8  # ViT patch side, pixels
_DOWNSAMPLE = 0.5  # pixel shuffle: 8×8 patches → 4×4 = 16 tokens per tile
_MAX_POSITIONS = 32768
_MAX_TILES = 4
_TEXT_HIDDEN = 128
_TEXT_LAYERS = 2
_TEXT_HEADS = 2  # head_dim 64: a size vLLM's CPU attention supports
_TEXT_KV_HEADS = 1
_HEAD_DIM = _TEXT_HIDDEN // _TEXT_HEADS

DEMO_TILES = TilePlan(tile=(_TILE, _TILE), max_tiles=_MAX_TILES)

IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *IMAGE_TOKENS.values()]

# ChatML as in InternVL3-*-hf: one <IMG_CONTEXT> per image part, which the processor (or vLLM)
# expands to <img> + N×<IMG_CONTEXT> + </img> for the image's tiles; no default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORD_TEXT = (
    "face faces person people image photo portrait crop picture camera background "
    "age years old young adult child teen teenager senior elderly middle aged about around "
    "gender male female man woman boy girl race ethnicity asian black white indian latino "
    "hispanic eastern southeast east expression emotion neutral happy sad angry "
    "surprised surprise fear fearful disgust disgusted contempt calm smile smiling frown "
    "glasses eyeglasses sunglasses reading none no yes true false null unknown uncertain "
    "beard mustache stubble shaved clean hair bald short long curly straight wavy brown "
    "blond blonde gray grey red dark light medium fair olive skin tone texture smooth "
    "wrinkles freckles acne scar tattoo makeup lipstick hat cap helmet mask scarf earrings "
    "pose frontal profile left right up down tilted head yaw pitch roll eyes closed open "
    "mouth nose lips teeth eyebrows forehead chin cheeks jaw quality blurry sharp occluded "
    "occlusion visible partially fully low high resolution confidence score value label "
    "attribute attributes answer question describe description the a an is are of in on "
    "with and or not this that looks appears seems likely probably wearing has have"
)
_KEY_TEXT = (
    "gender expression emotion glasses beard mustache hair_color skin_tone pose occlusion "
    "makeup headwear quality faces answer label"
)
_WORDS = _WORD_TEXT.split()
_KEYS = _KEY_TEXT.split()


def _corpus(lines: int = 4000) -> list[str]:
    """Deterministic training text: prose and JSON answers over face-attribute words and numbers."""
    rng = random.Random(_SEED)
    out = [" ".join(_WORDS), " ".join(str(n) for n in range(101))]
    for _ in range(lines):
        if rng.random() < 0.3:
            out.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) + ".")
            continue
        pairs = [f'"{key}": "{rng.choice(_WORDS)}"' for key in rng.sample(_KEYS, rng.randint(2, 6))]
        pairs.append(f'"age": {rng.randint(0, 100)}')
        pairs.append(f'"confidence": {round(rng.random(), 2)}')
        pairs.append(f'"box": [{", ".join(str(rng.randint(0, 255)) for _ in range(4))}]')
        rng.shuffle(pairs)
        out.append("{" + rng.choice([", ", ","]).join(pairs) + "}")
    return out


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(IMAGE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=_MAX_POSITIONS,
        padding_side="left",
    )


def _build_model(tokenizer: Any) -> Any:
    import torch
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        Qwen2Config,
    )

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 64) * 64
    vision = InternVLVisionConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=[_TILE, _TILE],
        patch_size=[_PATCH, _PATCH],
        norm_type="layer_norm",
        use_qk_norm=False,
        use_mean_pooling=True,
    )
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=256,
        num_hidden_layers=_TEXT_LAYERS,
        num_attention_heads=_TEXT_HEADS,
        num_key_value_heads=_TEXT_KV_HEADS,
        max_position_embeddings=_MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=_image_seq_length(),
        downsample_ratio=_DOWNSAMPLE,
        architectures=["InternVLForConditionalGeneration"],
    )
    torch.manual_seed(_SEED)
    model: Any = InternVLForConditionalGeneration(config)
    return model.to(torch.bfloat16).eval()


def _image_seq_length() -> int:
    return int(((_TILE // _PATCH) * _DOWNSAMPLE) ** 2)


def _build_processor(tokenizer: Any) -> Any:
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    tile = {"height": _TILE, "width": _TILE}
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet, as InternVL3
    image_processor = GotOcr2ImageProcessor(
        size=tile,
        crop_to_patches=True,
        min_patches=1,
        max_patches=_MAX_TILES,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=True,
    )
    video_processor = InternVLVideoProcessor(size=tile, image_mean=mean, image_std=std)
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=_image_seq_length(),
        chat_template=CHAT_TEMPLATE,
    )


def _write_all(directory: Path) -> None:
    from transformers import GenerationConfig

    tokenizer = _build_tokenizer()
    _build_model(tokenizer).save_pretrained(directory)
    _build_processor(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ).save_pretrained(directory)
    # Written last: its presence means every other file is complete.
    marker = {"builder_version": DEMO_BUILDER_VERSION, "seed": _SEED}
    (directory / MARKER_FILE).write_text(json.dumps(marker) + "\n")


def is_complete(directory: Path) -> bool:
    """True when `directory` holds a finished demo build of the current builder version."""
    try:
        marker = json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("builder_version") == DEMO_BUILDER_VERSION


def build_demo_model(target: Path) -> Path:
    """Build the demo model into `target`, replacing whatever is there; returns `target`.

    The build happens in a sibling temp dir that is renamed into place, so a crash or a concurrent
    reader never sees half a model.
    """
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        _write_all(staging)
        _make_shareable(staging)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _make_shareable(directory: Path) -> None:
    """World-readable like a download: one user may build the cache and another serve from it."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _install(staging: Path, target: Path) -> None:
    """Move a finished build into place, setting aside any stale or partial one first."""
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        # Another process installed its build between our check and rename; same bytes, keep it.
        if not is_complete(target):
            raise


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return the demo model under `cache_dir`, building it only when no complete build exists."""
    target = cache_dir / "demo"
    if is_complete(target):
        return target.absolute()
    return build_demo_model(target)


# --- demo LoRA adapters ------------------------------------------------------------------------

DEMO_ADAPTER_PREFIX = "demo-lora-"  # `demo-lora-<seed>`: an adapter source the server builds
_ADAPTER_RANK = 8
_ADAPTER_SCALE = 0.5  # large enough that greedy answers differ from the base model's


def build_demo_adapter(target: Path, seed: int) -> Path:
    """A PEFT LoRA adapter for the demo model: rank 8 on `q_proj` and `v_proj` of every text
    layer, as FaceLLM's own fine-tune targets attention, with weights drawn from `seed`. Same
    seed, same bytes; different seeds answer differently. Installed atomically like the model."""
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        _write_adapter(staging, seed)
        _make_shareable(staging)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_adapter(directory: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    outputs = {"q_proj": _TEXT_HIDDEN, "v_proj": _TEXT_KV_HEADS * _HEAD_DIM}
    tensors = {}
    for layer in range(_TEXT_LAYERS):
        for proj, out in outputs.items():
            # PEFT's names for a LoRA on transformers' InternVLForConditionalGeneration.
            name = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}"
            a = torch.randn(_ADAPTER_RANK, _TEXT_HIDDEN, generator=generator) * _ADAPTER_SCALE
            b = torch.randn(out, _ADAPTER_RANK, generator=generator) * _ADAPTER_SCALE
            tensors[f"{name}.lora_A.weight"] = a.to(torch.bfloat16)
            tensors[f"{name}.lora_B.weight"] = b.to(torch.bfloat16)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": _ADAPTER_RANK,
        "lora_alpha": 2 * _ADAPTER_RANK,
        "lora_dropout": 0.0,
        "target_modules": sorted(outputs),
        "bias": "none",
        "base_model_name_or_path": "demo",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    marker = {"builder_version": DEMO_BUILDER_VERSION, "seed": seed}
    (directory / MARKER_FILE).write_text(json.dumps(marker) + "\n")


def ensure_demo_adapter(cache_dir: Path, seed: int) -> Path:
    """The demo adapter of `seed` under `cache_dir`, built only when no complete build exists."""
    target = cache_dir / "demo-adapters" / str(seed)
    if is_complete(target):
        return target.absolute()
    return build_demo_adapter(target, seed)
