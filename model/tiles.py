"""What the model can see of an image: InternVL's tiling, read from the served processor config.

InternVL-family processors (transformers' `GotOcr2ImageProcessor`, which vLLM runs for
`InternVLForConditionalGeneration`) resize an image onto a canvas of `columns × rows` tiles — the
grid of at most `max_patches` tiles whose aspect ratio is closest to the image's — and add a
thumbnail tile when there is more than one. With `crop_to_patches` off, every image is one tile.
Pixels beyond that canvas are thrown away by the processor, so the server never needs to decode or
hold more than the canvas.

An image handed over already at its canvas size gets that same grid back (exact aspect match, and
the tie-break keeps the smaller of equal-ratio grids at that area; `tests/model/test_tiles.py`
checks every grid). That is how a per-image tile budget (`detail`, one tile per face) is applied:
by the size of the image the engine receives, with no per-request processor arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

Size = tuple[int, int]
"""(width, height) in pixels, as PIL reports them."""

IMAGE_PROCESSOR_CONFIG = "preprocessor_config.json"
PROCESSOR_CONFIG = "processor_config.json"


@dataclass(frozen=True)
class TilePlan:
    """The tiling of one served model's image processor."""

    tile: Size
    max_tiles: int = 1  # the processor's max_patches when it crops to patches, else 1
    min_tiles: int = 1

    @classmethod
    def from_model_dir(cls, path: Path) -> TilePlan:
        """Read the image processor's config from a Hugging Face model directory: its own
        `preprocessor_config.json` (hub checkpoints), or the `image_processor` section of
        `processor_config.json` (what transformers 5 writes)."""
        try:
            if (path / IMAGE_PROCESSOR_CONFIG).is_file():
                config = json.loads((path / IMAGE_PROCESSOR_CONFIG).read_text())
            else:
                config = json.loads((path / PROCESSOR_CONFIG).read_text())["image_processor"]
            size = config["size"]
            tile = (int(size["width"]), int(size["height"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path} has no usable image processor config ({IMAGE_PROCESSOR_CONFIG} or "
                f"{PROCESSOR_CONFIG} with a tile size): is it an InternVL-family model?"
            ) from e
        if not config.get("crop_to_patches", False):
            return cls(tile=tile)
        return cls(
            tile=tile,
            max_tiles=int(config.get("max_patches", 12)),
            min_tiles=int(config.get("min_patches", 1)),
        )

    def budget(self, max_tiles: int | None) -> int:
        """A requested tile budget, within what the processor allows (None: the maximum)."""
        if max_tiles is None:
            return self.max_tiles
        return max(self.min_tiles, min(max_tiles, self.max_tiles))

    def grid(self, size: Size, max_tiles: int | None = None) -> Size:
        """(columns, rows) the processor picks for an image of `size` under a tile budget."""
        limit = self.budget(max_tiles)
        if limit <= 1:
            return (1, 1)
        # transformers' own function, from the module of the processor vLLM runs (already loaded
        # by the engine's warm-up): the choice is the processor's, not a copy of it.
        from transformers.models.got_ocr2.image_processing_got_ocr2 import (
            get_optimal_tiled_canvas,
        )

        width, height = size
        tile_width, tile_height = self.tile
        columns, rows = get_optimal_tiled_canvas(
            (height, width), (tile_height, tile_width), self.min_tiles, limit
        )
        return (int(columns), int(rows))

    def canvas(self, size: Size, max_tiles: int | None = None) -> Size:
        """The size the processor resizes an image of `size` to before cutting its tiles."""
        columns, rows = self.grid(size, max_tiles)
        return (self.tile[0] * columns, self.tile[1] * rows)

    def tiles(self, size: Size, max_tiles: int | None = None) -> int:
        """Tiles the model sees for an image of `size`: the grid, plus a thumbnail if over one."""
        columns, rows = self.grid(size, max_tiles)
        return columns * rows + (1 if columns * rows > 1 else 0)
