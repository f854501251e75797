"""The FaceLLM variants this server knows by name, with the facts needed to size a deployment.

Sources: FaceLLM (arXiv 2507.10300) fine-tunes `OpenGVLab/InternVL3-{1B,8B,38B}-hf` with LoRA
and publishes merged weights as `Idiap/FaceLLM-*`, whose hub repos keep the HF-format model in a
`model/` subfolder. Context length: the Qwen2.5 text backbones' `max_position_embeddings`, 32768
for all three. TP sizes assume 80 GB GPUs and bf16: 38B (~77 GB of weights alone) needs two.
"""

from __future__ import annotations

from dataclasses import dataclass

DEMO_MODEL_NAME = "demo"


@dataclass(frozen=True)
class Variant:
    """One servable model: where its weights live and how to size an engine for it."""

    name: str
    hub_id: str | None
    base_model: str | None
    params_b: float
    recommended_tp: int
    max_model_len: int
    weights_subfolder: str | None = None


def _facellm(size: str, params_b: float, recommended_tp: int) -> Variant:
    return Variant(
        name=f"FaceLLM-{size}",
        hub_id=f"Idiap/FaceLLM-{size}",
        base_model=f"OpenGVLab/InternVL3-{size}-hf",
        params_b=params_b,
        recommended_tp=recommended_tp,
        max_model_len=32768,
        weights_subfolder="model",
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _facellm("1B", 0.9, 1),
        _facellm("8B", 7.9, 1),
        _facellm("38B", 38.4, 2),
        # Built locally by model.demo; its context length is the tiny text model's positions.
        Variant(
            name=DEMO_MODEL_NAME,
            hub_id=None,
            base_model=None,
            params_b=0.00056,
            recommended_tp=1,
            max_model_len=32768,
        ),
    )
}


def lookup(name: str) -> Variant | None:
    """Find a variant by registry name or hub id, in any case: `facellm-8b`, `idiap/FACELLM-8B`."""
    wanted = name.strip().casefold()
    for variant in VARIANTS.values():
        if wanted == variant.name.casefold():
            return variant
        if variant.hub_id is not None and wanted == variant.hub_id.casefold():
            return variant
    return None
