"""LoRA adapters in the model layer: the adapter table (model/adapters.py) refuses what the engine
cannot load and never reuses an id; adapters are found on disk (model/weights.py), and the demo
ones are built deterministically (model/demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.adapters import AdapterTable
from model.demo import build_demo_adapter
from model.engine import Adapter, AdapterError, UnknownAdapter
from model.weights import WeightsNotFound, resolve_adapter


def test_a_rank_above_the_limit_is_refused(demo_adapter: Path) -> None:
    table = AdapterTable("demo", max_rank=1)
    with pytest.raises(AdapterError, match="rank 8, above max_lora_rank 1"):
        table.admit(Adapter("smiles", demo_adapter))
    with pytest.raises(AdapterError, match="not enabled"):
        AdapterTable("demo", max_rank=None).admit(Adapter("smiles", demo_adapter))


def test_ids_are_never_reused(demo_adapter: Path) -> None:
    """vLLM caches adapter weights by id: a name loaded again must get a fresh one."""
    table = AdapterTable("demo", max_rank=16)
    first = table.admit(Adapter("a", demo_adapter))
    table.add(Adapter("a", demo_adapter), first)
    table.remove("a")
    second = table.admit(Adapter("a", demo_adapter))
    assert second != first
    with pytest.raises(UnknownAdapter):
        table.get("a")


def test_demo_adapters_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = resolve_adapter("a", "demo-lora-1", cache_dir=tmp_path / "x", allow_download=False)
    b = build_demo_adapter(tmp_path / "y", seed=1)
    c = build_demo_adapter(tmp_path / "z", seed=2)
    weights = "adapter_model.safetensors"
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    assert (a / weights).read_bytes() != (c / weights).read_bytes()


def test_a_directory_without_an_adapter_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match=r"holds no adapter_config\.json"):
        resolve_adapter("x", str(tmp_path), cache_dir=tmp_path, allow_download=False)
