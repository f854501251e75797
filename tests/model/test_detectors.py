"""The face detectors on real photos the tests make offline (tests/images.py): CenterFace, the
default, finds tilted and three-quarter faces with landmarks and probabilities; Haar stays for
comparison; a missing or broken model file fails at startup with a clear message."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from model.detect import Box
from model.detectors import (
    CenterFaceDetector,
    HaarDetector,
    YuNetDetector,
    centerface_weights,
    make_detector,
)
from tests.images import (
    GROUP_FACES,
    TRUE_ASTRONAUT_FACE,
    astronaut,
    cameraman,
    cat,
    group_photo,
    iou,
    rotated,
)

CAMERAMAN_FACE = (198, 115, 58, 84)  # checked by eye: his face, turned towards the camera


def xywh(box: Box) -> tuple[int, int, int, int]:
    return box.x, box.y, box.w, box.h


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    detector = make_detector("centerface")
    assert isinstance(detector, CenterFaceDetector)
    return detector


def the_one_face(detector: CenterFaceDetector, image: Image.Image) -> Box:
    boxes = detector.detect(image, max_faces=8)
    assert len(boxes) == 1, boxes
    return boxes[0]


def test_centerface_finds_the_astronaut(centerface: CenterFaceDetector) -> None:
    face = the_one_face(centerface, astronaut())
    assert iou(xywh(face), TRUE_ASTRONAUT_FACE) > 0.5


@pytest.mark.parametrize("degrees", [30, -30])
def test_centerface_finds_a_face_tilted_30_degrees(
    centerface: CenterFaceDetector, degrees: int
) -> None:
    face = the_one_face(centerface, rotated(astronaut(), degrees))
    assert face.score > 0.5


def test_centerface_finds_a_three_quarter_face(centerface: CenterFaceDetector) -> None:
    face = the_one_face(centerface, cameraman())
    assert iou(xywh(face), CAMERAMAN_FACE) > 0.5


def test_centerface_finds_every_face_of_a_group_and_nothing_else(
    centerface: CenterFaceDetector,
) -> None:
    boxes = centerface.detect(group_photo(), max_faces=8)
    assert len(boxes) == len(GROUP_FACES)
    for truth in GROUP_FACES:
        assert max(iou(xywh(b), truth) for b in boxes) > 0.5, truth


def test_centerface_finds_no_face_on_a_cat(centerface: CenterFaceDetector) -> None:
    assert centerface.detect(cat(), max_faces=8) == []


@pytest.mark.parametrize(
    "image",
    [astronaut(), cameraman(), rotated(astronaut(), 30), group_photo()],
    ids=["astronaut", "cameraman", "astronaut-tilted", "group"],
)
def test_landmarks_lie_inside_their_box_and_scores_are_probabilities(
    centerface: CenterFaceDetector, image: Image.Image
) -> None:
    for box in centerface.detect(image, max_faces=8):
        assert 0 <= box.score <= 1
        assert len(box.landmarks) == 5
        for point in box.landmarks:
            assert box.x <= point.x <= box.x + box.w, (box, point)
            assert box.y <= point.y <= box.y + box.h, (box, point)


def test_landmarks_sit_where_eyes_nose_and_mouth_are(centerface: CenterFaceDetector) -> None:
    left_eye, right_eye, nose, mouth_left, mouth_right = the_one_face(
        centerface, astronaut()
    ).landmarks
    assert left_eye.x < right_eye.x and mouth_left.x < mouth_right.x
    assert max(left_eye.y, right_eye.y) < nose.y < min(mouth_left.y, mouth_right.y)


def test_boxes_of_a_large_photo_are_in_its_own_pixels(centerface: CenterFaceDetector) -> None:
    """The detector works on a small copy; boxes and landmarks come back at full size."""
    big = astronaut().resize((2048, 2048))
    face = the_one_face(centerface, big)
    truth = tuple(v * 4 for v in TRUE_ASTRONAUT_FACE)
    assert iou(xywh(face), truth) > 0.5  # type: ignore[arg-type]
    assert all(face.x <= p.x <= face.x + face.w for p in face.landmarks)


def test_largest_face_first_and_max_faces(centerface: CenterFaceDetector) -> None:
    boxes = centerface.detect(group_photo(), max_faces=2)
    assert len(boxes) == 2
    assert boxes[0].w * boxes[0].h >= boxes[1].w * boxes[1].h


def test_non_rgb_images_are_accepted(centerface: CenterFaceDetector) -> None:
    assert len(centerface.detect(astronaut().convert("L"), max_faces=8)) == 1


def test_a_threshold_above_every_score_finds_nothing() -> None:
    strict = make_detector("centerface", score_threshold=0.999)
    assert strict.detect(astronaut(), max_faces=8) == []


def test_centerface_is_safe_from_worker_threads(centerface: CenterFaceDetector) -> None:
    """One onnxruntime session, no lock: calls at once, of several shapes, give the same boxes."""
    images = [astronaut(), cameraman(), group_photo(), astronaut().resize((300, 200))] * 3
    expected = [centerface.detect(image, max_faces=8) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda image: centerface.detect(image, max_faces=8), images))
    assert results == expected


def test_the_weights_come_from_the_installed_package() -> None:
    path = centerface_weights()
    assert path is not None and path.name == "centerface.onnx" and path.stat().st_size > 1e6


def test_missing_or_broken_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CenterFace model file not found"):
        make_detector("centerface", tmp_path / "missing.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="could not load CenterFace model"):
        make_detector("centerface", bogus)
    with pytest.raises(ValueError, match="face_detector_model"):
        make_detector("yunet", None)
    with pytest.raises(ValueError, match="could not load YuNet model"):
        YuNetDetector(bogus)


def test_haar_stays_for_comparison_without_landmarks_or_probabilities() -> None:
    haar = make_detector("haar")
    assert isinstance(haar, HaarDetector)
    (face,) = haar.detect(astronaut(), max_faces=8)
    assert iou(xywh(face), TRUE_ASTRONAUT_FACE) > 0.5
    assert face.score == 1.0 and face.landmarks == ()
