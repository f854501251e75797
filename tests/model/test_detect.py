"""Faces as FaceLLM was trained to see them: square FairFace margin025 crops, boxes and landmarks
carried between image sizes."""

import numpy as np
import pytest
from PIL import Image

from model.demo import DEMO_TILES
from model.detect import Box, Point, crop_face, face_view, scale_box, whole_image_box


def test_crop_is_a_square_of_the_longer_side_grown_by_a_quarter_each_side() -> None:
    image = Image.fromarray(
        np.arange(300 * 300 * 3, dtype=np.uint32).astype(np.uint8).reshape(300, 300, 3)
    )
    crop = crop_face(image, Box(100, 80, 40, 80))  # centre (120, 120), side 80 × 1.5 = 120
    assert crop.size == (120, 120)
    assert np.array_equal(np.asarray(crop), np.asarray(image)[60:180, 60:180])


@pytest.mark.parametrize(
    ("box", "size"),
    [
        (Box(0, 0, 40, 80), (80, 100)),  # top-left: clipped at 0 on both sides
        (Box(270, 150, 30, 50), (52, 62)),  # bottom-right: clipped at the far sides
        (Box(0, 0, 300, 200), (300, 200)),  # the whole image stays the whole image
    ],
)
def test_crop_clips_at_borders(box: Box, size: tuple[int, int]) -> None:
    assert crop_face(Image.new("RGB", (300, 200)), box).size == size


def test_crop_rejects_box_outside_image() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_face(Image.new("RGB", (300, 200)), Box(400, 10, 20, 20))


def test_face_view_is_one_tile() -> None:
    view = face_view(Image.new("RGB", (1000, 800)), Box(400, 300, 90, 120), DEMO_TILES)
    assert view.size == DEMO_TILES.tile


def test_whole_image_box() -> None:
    assert whole_image_box(Image.new("RGB", (300, 200))) == Box(0, 0, 300, 200, 1.0)


def test_scale_box_carries_landmarks() -> None:
    box = Box(10, 20, 30, 40, 0.9, (Point(15, 30), Point(25, 30)))
    scaled = scale_box(box, (100, 100), (200, 400))
    assert (scaled.x, scaled.y, scaled.w, scaled.h, scaled.score) == (20, 80, 60, 160, 0.9)
    assert scaled.landmarks == (Point(30, 120), Point(50, 120))
