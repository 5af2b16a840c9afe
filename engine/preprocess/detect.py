"""Face detection and the 478 mediapipe landmarks, with graphs created once per process.

mediapipe 0.10.21's legacy ``mp.solutions`` ships the face-detection, face-mesh (with
attention/iris refinement: 478 points) and selfie-segmentation models inside the wheel,
so nothing is downloaded (docs/architecture.md, "Dependencies").

Strategy: detect every face on a downscaled copy (full-range model, short-range as a
fallback), take the largest, and run FaceMesh on a full-resolution square crop around
it. Running FaceMesh on the crop rather than the whole photo keeps small faces in big
photos at a useful resolution and stops FaceMesh picking a different face.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.errors import BadInput, ModelMissing

from .crop import crop_square, square_box

log = logging.getLogger(__name__)

N_LANDMARKS = 478
_MESH_SIZE = 384  # FaceMesh input: the face fills ~half of it, well above its 192/256 px models
_MESH_MARGIN = 2.0  # mesh crop side / detection box side: room for FaceMesh's own detector

_graphs: dict[tuple, object] = {}
_lock = threading.RLock()  # graphs are not re-entrant: one process() call at a time


@dataclass(frozen=True)
class FaceBox:
    """A detection in photo pixels (continuous coords) with its score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)


def _solutions():
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info logs are noise here
    try:
        import mediapipe as mp

        return mp.solutions
    except (ImportError, AttributeError) as exc:
        raise ModelMissing("mediapipe", f"mediapipe 0.10.21 with its bundled face models is required "
                           f"(pip install mediapipe==0.10.21): {exc}") from None


def graph(kind: str, **options):
    """The cached mediapipe graph ``kind`` built with ``options`` (created on first use)."""
    key = (kind, tuple(sorted(options.items())))
    with _lock:
        found = _graphs.get(key)
        if found is None:
            solutions = _solutions()
            factory = {
                "face_detection": lambda: solutions.face_detection.FaceDetection(**options),
                "face_mesh": lambda: solutions.face_mesh.FaceMesh(**options),
                "selfie_segmentation": lambda: solutions.selfie_segmentation.SelfieSegmentation(**options),
                "hands": lambda: solutions.hands.Hands(**options),
            }[kind]
            found = _graphs[key] = factory()
            log.debug("created mediapipe %s %s", kind, options)
        return found


def process(kind: str, image: np.ndarray, **options):
    """Run a cached graph on an RGB uint8 image [H, W, 3] (serialised across threads)."""
    with _lock:
        return graph(kind, **options).process(np.ascontiguousarray(image))


@atexit.register
def close_graphs() -> None:
    """Close every cached graph (registered at exit; safe to call any time)."""
    with _lock:
        for found in _graphs.values():
            try:
                found.close()
            except Exception:  # noqa: BLE001 - closing at exit must not raise
                pass
        _graphs.clear()


def _detect(rgb: np.ndarray, confidence: float, max_side: int) -> list[FaceBox]:
    """One detection pass over a whole image [H, W, 3] (downscaled to ``max_side``)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = rgb if scale >= 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    detections = []
    for model in (1, 0):  # full range (faces up to ~5 m) first, short range for close-ups
        result = process("face_detection", small, model_selection=model, min_detection_confidence=confidence)
        detections = result.detections or []
        if detections:
            break
    boxes = []
    for d in detections:
        b = d.location_data.relative_bounding_box
        # Relative coordinates are the same in the downscaled copy and the photo.
        boxes.append(FaceBox(b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h,
                             float(d.score[0]) if d.score else 0.0))
    return boxes


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    return inter / max(a.area + b.area - inter, 1e-9)


def _tiles(h: int, w: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of side² tiles at 50 % overlap covering an h × w image."""
    def starts(n):
        last = max(n - side, 0)
        return sorted(set(list(range(0, last + 1, side // 2)) + [last]))
    return [(x, y) for y in starts(h) for x in starts(w)]


def detect_faces(rgb: np.ndarray, confidence: float = 0.5, max_side: int = 1280,
                 cancel: Callable[[], None] | None = None) -> list[FaceBox]:
    """All faces in the photo, largest first. rgb: [H, W, 3] uint8.

    The full-range detector needs a face ≳ 7 % of the image side (measured on the
    portrait); when the whole image yields nothing, overlapping tiles of 1/2 then 1/4 of
    the shorter side are searched, so a small face in a big group photo is still found.
    cancel: called before each tile (a cancel point: it raises to stop); a faceless
    12-megapixel photo searches ~80 tiles, seconds on a CPU.
    """
    boxes = _detect(rgb, confidence, max_side)
    h, w = rgb.shape[:2]
    for fraction in (2, 4):
        side = min(h, w) // fraction
        if boxes or side < 256:
            break
        for x, y in _tiles(h, w, side):
            if cancel is not None:
                cancel()
            for b in _detect(rgb[y:y + side, x:x + side], confidence, max_side):
                boxes.append(FaceBox(b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y, b.score))
        # Overlapping tiles see the same face more than once: keep the best-scored box.
        kept: list[FaceBox] = []
        for b in sorted(boxes, key=lambda b: b.score, reverse=True):
            if all(_iou(b, k) < 0.3 for k in kept):
                kept.append(b)
        boxes = kept
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def _mesh(patch: np.ndarray) -> list[np.ndarray]:
    """FaceMesh on a square patch [M, M, 3]: list of [478, 3] in patch pixels (z × M like x)."""
    result = process("face_mesh", patch, static_image_mode=True, max_num_faces=2, refine_landmarks=True,
                     min_detection_confidence=0.5)
    faces = []
    for face in result.multi_face_landmarks or []:
        points = np.array([(p.x, p.y, p.z) for p in face.landmark], np.float64)
        if len(points) == N_LANDMARKS:
            faces.append(points * np.array([patch.shape[1], patch.shape[0], patch.shape[1]]))
    return faces


def landmarks_in_box(rgb: np.ndarray, box: FaceBox) -> np.ndarray | None:
    """478 landmarks [478, 3] in photo pixels for the face in ``box``, or None."""
    side = _MESH_MARGIN * max(box.x1 - box.x0, box.y1 - box.y0)
    region = square_box((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, side)
    patch = crop_square(rgb, region, _MESH_SIZE, pad="edge")
    faces = _mesh(patch)
    if not faces:
        return None
    # With two faces in the patch, keep the one centred where the detection was.
    centre = np.array([_MESH_SIZE / 2, _MESH_SIZE / 2])
    points = min(faces, key=lambda f: float(np.linalg.norm(f[:, :2].mean(0) - centre)))
    scale = (region[2] - region[0]) / _MESH_SIZE
    out = points * scale
    out[:, 0] += region[0]
    out[:, 1] += region[1]
    return out


def find_face(rgb: np.ndarray, path: Path, confidence: float = 0.5, max_side: int = 1280,
              cancel: Callable[[], None] | None = None) -> tuple[np.ndarray, int]:
    """Landmarks of the largest face and the number of faces; ``BadInput`` (no_face) if none.

    rgb: [H, W, 3] uint8. Returns ([478, 3] photo pixels, n_faces). cancel: a cancel
    point called between detector and FaceMesh passes (``RunContext.check_cancelled``).
    """
    boxes = detect_faces(rgb, confidence, max_side, cancel)
    for box in boxes[:3]:  # a false detection may be largest: try the next ones
        if cancel is not None:
            cancel()
        points = landmarks_in_box(rgb, box)
        if points is not None:
            return points, len(boxes)
    if not boxes:
        # The detector missed; FaceMesh's own detector sometimes still finds a close-up face.
        points = _mesh_whole(rgb)
        if points is not None:
            return points, 1
    raise BadInput(path, "no face found", "no_face")


def _mesh_whole(rgb: np.ndarray) -> np.ndarray | None:
    """FaceMesh on the whole photo (padded square): the tallest face [478, 3] or None."""
    h, w = rgb.shape[:2]
    region = square_box(w / 2, h / 2, max(w, h))
    size = min(region[2] - region[0], 2 * _MESH_SIZE)
    faces = _mesh(crop_square(rgb, region, size, pad="edge"))
    if not faces:
        return None
    points = max(faces, key=lambda f: float(np.ptp(f[:, 1]))) * ((region[2] - region[0]) / size)
    points[:, 0] += region[0]
    points[:, 1] += region[1]
    return points
