from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from model.detect import (
    Box,
    HaarDetector,
    YuNetDetector,
    crop_face,
    make_detector,
    whole_image_box,
)

ASTRONAUT_FACE = Box(177, 66, 95, 95)


def iou(a: Box, b: Box) -> float:
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    return inter / (a.w * a.h + b.w * b.h - inter)


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def two_astronauts(astronaut: Image.Image) -> Image.Image:
    """The astronaut at full size on the left, at 400 px on the right."""
    canvas = Image.new("RGB", (512 + 400, 512))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut.resize((400, 400)), (512, 0))
    return canvas


def test_haar_finds_the_astronaut(haar: HaarDetector, astronaut: Image.Image) -> None:
    boxes = haar.detect(astronaut, max_faces=8)
    assert len(boxes) == 1
    assert iou(boxes[0], ASTRONAUT_FACE) > 0.5
    assert boxes[0].score > 0


def test_haar_finds_no_face_on_a_cat(haar: HaarDetector) -> None:
    assert haar.detect(Image.fromarray(data.chelsea()), max_faces=8) == []


def test_haar_two_faces_largest_first(haar: HaarDetector, two_astronauts: Image.Image) -> None:
    boxes = haar.detect(two_astronauts, max_faces=8)
    assert len(boxes) == 2
    assert iou(boxes[0], ASTRONAUT_FACE) > 0.5
    scaled = Box(512 + round(177 * 400 / 512), round(66 * 400 / 512), 74, 74)
    assert iou(boxes[1], scaled) > 0.5
    assert haar.detect(two_astronauts, max_faces=1) == boxes[:1]


def test_haar_large_image_boxes_are_in_full_size_pixels(
    haar: HaarDetector, astronaut: Image.Image
) -> None:
    big = astronaut.resize((2048, 2048))
    boxes = haar.detect(big, max_faces=1)
    assert iou(boxes[0], Box(177 * 4, 66 * 4, 95 * 4, 95 * 4)) > 0.5


def test_haar_accepts_non_rgb_images(haar: HaarDetector, astronaut: Image.Image) -> None:
    assert len(haar.detect(astronaut.convert("L"), max_faces=8)) == 1


def test_max_faces_must_be_positive(haar: HaarDetector, astronaut: Image.Image) -> None:
    with pytest.raises(ValueError, match="max_faces"):
        haar.detect(astronaut, max_faces=0)


def test_crop_grows_box_by_a_quarter_each_side() -> None:
    image = Image.fromarray(
        np.arange(200 * 300 * 3, dtype=np.uint32).astype(np.uint8).reshape(200, 300, 3)
    )
    crop = crop_face(image, Box(100, 50, 40, 80))
    assert crop.size == (60, 120)
    expected = np.asarray(image)[30:150, 90:150]
    assert np.array_equal(np.asarray(crop), expected)


@pytest.mark.parametrize(
    ("box", "size"),
    [
        (Box(0, 0, 40, 80), (50, 100)),  # top-left: only right and bottom grow
        (Box(270, 150, 30, 50), (38, 63)),  # bottom-right: clipped; 7.5 and 12.5 round up
        (Box(0, 0, 300, 200), (300, 200)),  # the whole image stays the whole image
    ],
)
def test_crop_clips_at_borders(box: Box, size: tuple[int, int]) -> None:
    assert crop_face(Image.new("RGB", (300, 200)), box).size == size


def test_crop_rejects_box_outside_image() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_face(Image.new("RGB", (300, 200)), Box(400, 10, 20, 20))


def test_whole_image_box() -> None:
    assert whole_image_box(Image.new("RGB", (300, 200))) == Box(0, 0, 300, 200, 1.0)


def test_make_detector_haar() -> None:
    assert isinstance(make_detector("haar", None), HaarDetector)


def test_yunet_needs_a_path() -> None:
    with pytest.raises(ValueError, match="yunet_model_path"):
        make_detector("yunet", None)


def test_yunet_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "face_detection_yunet.onnx"
    with pytest.raises(FileNotFoundError, match="YuNet model file not found"):
        make_detector("yunet", missing)


def test_yunet_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "face_detection_yunet.onnx"
    bogus.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="could not load YuNet model"):
        YuNetDetector(bogus)


def test_haar_is_safe_from_worker_threads(haar: HaarDetector, astronaut: Image.Image) -> None:
    expected = haar.detect(astronaut, max_faces=8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: haar.detect(astronaut, max_faces=8), range(8)))
    assert results == [expected] * 8
