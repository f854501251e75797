"""model/tiles.py: the largest useful input, from the processor config (no hard-coded 448)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.tiles import TilePlan

# The image-processor part of an InternVL3-1B-hf / FaceLLM-1B config, as its hub files have it.
FACELLM_1B_PROCESSOR = {
    "image_processor_type": "GotOcr2ImageProcessorFast",
    "processor_class": "InternVLProcessor",
    "crop_to_patches": True,
    "min_patches": 1,
    "max_patches": 12,
    "size": {"height": 448, "width": 448},
    "resample": 3,
}


def write_config(directory: Path, **overrides: object) -> Path:
    (directory / "preprocessor_config.json").write_text(
        json.dumps(FACELLM_1B_PROCESSOR | overrides)
    )
    return directory


def test_facellm_1b_shaped_config(tmp_path: Path) -> None:
    plan = TilePlan.from_model_dir(write_config(tmp_path))
    assert plan == TilePlan(tile=(448, 448), max_tiles=12, min_tiles=1)
    assert plan.grid((4032, 3024)) == (4, 3)  # a 12-MP phone photo: 12 tiles + thumbnail
    assert plan.canvas((4032, 3024)) == (1792, 1344)
    assert plan.tiles((4032, 3024)) == 13
    assert plan.tiles((1235, 1235)) == 10  # a big face crop, tiled like a scene
    assert plan.canvas((1235, 1235), 1) == (448, 448)  # one tile, as FaceLLM was trained
    assert plan.canvas((3024, 4032), 1) == (448, 448)


def test_transformers_5_processor_config_layout(tmp_path: Path) -> None:
    nested = {"image_processor": FACELLM_1B_PROCESSOR, "processor_class": "InternVLProcessor"}
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    assert TilePlan.from_model_dir(tmp_path) == TilePlan(tile=(448, 448), max_tiles=12)


def test_without_crop_to_patches_every_image_is_one_tile(tmp_path: Path) -> None:
    plan = TilePlan.from_model_dir(write_config(tmp_path, crop_to_patches=False))
    assert plan.max_tiles == 1
    assert plan.canvas((4032, 3024)) == (448, 448) and plan.tiles((4032, 3024)) == 1


def test_non_square_tiles_and_budgets(tmp_path: Path) -> None:
    plan = TilePlan.from_model_dir(
        write_config(tmp_path, size={"height": 336, "width": 448}, max_patches=6)
    )
    assert plan.tile == (448, 336) and plan.max_tiles == 6
    assert plan.budget(None) == 6 and plan.budget(99) == 6 and plan.budget(0) == 1
    # The grid follows the image's aspect in tiles, not pixels: a 4:3 photo on 4:3 tiles is one.
    assert plan.canvas((4032, 3024), 2) == (448, 336)
    assert plan.canvas((4032, 1512), 2) == (896, 336)


@pytest.mark.parametrize("plan", [TilePlan((448, 448), 12), TilePlan((64, 64), 4)])
def test_an_image_at_its_canvas_gets_the_same_grid_back(plan: TilePlan) -> None:
    """The server hands images over at their canvas: the processor must then pick that grid
    again, for every grid of every budget, or `detail` and face tiles would not hold."""
    for limit in range(1, plan.max_tiles + 1):
        for columns in range(1, limit + 1):
            for rows in range(1, limit // columns + 1):
                canvas = (plan.tile[0] * columns, plan.tile[1] * rows)
                assert plan.grid(canvas) == (columns, rows), (limit, columns, rows)
                assert plan.grid(canvas, limit) == (columns, rows)


def test_a_directory_without_an_image_processor_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no usable image processor config"):
        TilePlan.from_model_dir(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"crop_to_patches": true}')
    with pytest.raises(ValueError, match="InternVL-family"):
        TilePlan.from_model_dir(tmp_path)
