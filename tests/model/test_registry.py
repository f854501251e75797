from __future__ import annotations

import dataclasses

import pytest

from model.registry import DEMO_MODEL_NAME, VARIANTS, Variant, lookup


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("FaceLLM-8B", "FaceLLM-8B"),
        ("facellm-38b", "FaceLLM-38B"),
        ("  FACELLM-1B ", "FaceLLM-1B"),
        ("Idiap/FaceLLM-1B", "FaceLLM-1B"),
        ("idiap/facellm-8b", "FaceLLM-8B"),
        ("demo", DEMO_MODEL_NAME),
        ("DEMO", DEMO_MODEL_NAME),
    ],
)
def test_lookup_by_name_or_hub_id_ignores_case(query: str, expected: str) -> None:
    variant = lookup(query)
    assert variant is not None
    assert variant.name == expected


@pytest.mark.parametrize("query", ["FaceLLM-2B", "OpenGVLab/InternVL3-8B-hf", "", "Idiap/"])
def test_lookup_unknown_is_none(query: str) -> None:
    assert lookup(query) is None


def test_facellm_variants_point_at_their_base_and_hub_repos() -> None:
    for size, tp in (("1B", 1), ("8B", 1), ("38B", 2)):
        variant = VARIANTS[f"FaceLLM-{size}"]
        assert variant.hub_id == f"Idiap/FaceLLM-{size}"
        assert variant.base_model == f"OpenGVLab/InternVL3-{size}-hf"
        assert variant.recommended_tp == tp
        assert variant.max_model_len == 32768
        assert variant.weights_subfolder == "model"


def test_params_grow_with_the_variant_and_38b_needs_two_80gb_gpus() -> None:
    sizes = [VARIANTS[n].params_b for n in ("FaceLLM-1B", "FaceLLM-8B", "FaceLLM-38B")]
    assert sizes == sorted(sizes)
    bf16_weights_gb = VARIANTS["FaceLLM-38B"].params_b * 2
    assert bf16_weights_gb > 70  # does not fit one 80 GB GPU with any KV cache


def test_demo_entry_has_no_hub_repo() -> None:
    demo = VARIANTS[DEMO_MODEL_NAME]
    assert demo.hub_id is None
    assert demo.recommended_tp == 1


def test_variant_is_immutable() -> None:
    variant = VARIANTS["FaceLLM-8B"]
    assert isinstance(variant, Variant)
    with pytest.raises(dataclasses.FrozenInstanceError):
        variant.recommended_tp = 4  # type: ignore[misc]
