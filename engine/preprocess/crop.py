"""Square crops that may leave the photo, and the head box derived from the landmarks.

Boxes are snapped to whole pixels so the crop is an exact slice + resize: with
continuous pixel coordinates (pixel i spans [i, i+1]) a photo point p maps to
(p - x0) · size / side in the crop, with no half-pixel bookkeeping.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# mediapipe FaceMesh indices (canonical face model): forehead top (hairline centre),
# chin bottom, and the two cheek contour points at the widest part of the face.
FOREHEAD, CHIN, CHEEK_RIGHT, CHEEK_LEFT = 10, 152, 234, 454


def square_box(cx: float, cy: float, side: float) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1), x1 - x0 == y1 - y0 >= 1, centred as closely as possible."""
    side_i = max(1, int(round(side)))
    x0 = int(math.floor(cx - side_i / 2 + 0.5))
    y0 = int(math.floor(cy - side_i / 2 + 0.5))
    return x0, y0, x0 + side_i, y0 + side_i


def crop_square(image: np.ndarray, box: tuple[int, int, int, int], size: int,
                pad: str = "edge", fill=0) -> np.ndarray:
    """Cut ``box`` out of ``image`` (padding outside it) and resample to size × size.

    image: [H, W] or [H, W, C] uint8.
    pad: "edge" replicates the border, "constant" fills with ``fill``.
    Returns [size, size] or [size, size, C] uint8.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:  # the box misses the photo entirely
        region = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
        region[...] = fill
    else:
        region = image[iy0:iy1, ix0:ix1]
        margins = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
        if any(margins):
            if pad == "edge":
                region = cv2.copyMakeBorder(region, *margins, cv2.BORDER_REPLICATE)
            else:
                value = fill if np.ndim(fill) == 0 else [int(v) for v in fill]
                region = cv2.copyMakeBorder(region, *margins, cv2.BORDER_CONSTANT, value=value)
    side = x1 - x0
    if side == size:
        return np.ascontiguousarray(region)
    # Area averaging when shrinking (no aliasing from big photos), bilinear when enlarging.
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    out = cv2.resize(region, (size, size), interpolation=interp)
    return out.reshape((size, size) + image.shape[2:])


def head_box(landmarks: np.ndarray, head_scale: float, head_shift: float) -> tuple[int, int, int, int]:
    """Square box around the whole head (hair included), in photo pixels.

    landmarks: [478, 3] photo pixels (z in the same pixel scale).
    The scale is the chin–forehead distance in 3D (mediapipe's z shares x's scale), so a
    head tilted up or down does not shrink the crop; the face width (cheek to cheek, ×1.2
    ≈ a frontal face's height) guards against a poor z. The centre moves up along the
    face's own up direction in the image, so a rolled head stays centred.
    """
    top, chin = landmarks[FOREHEAD], landmarks[CHIN]
    height3d = float(np.linalg.norm(top - chin))
    width = float(np.linalg.norm(landmarks[CHEEK_LEFT, :2] - landmarks[CHEEK_RIGHT, :2]))
    face = max(height3d, 1.2 * width, 1.0)
    up = top[:2] - chin[:2]
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    centre = (top[:2] + chin[:2]) / 2 + up * head_shift * face
    return square_box(float(centre[0]), float(centre[1]), head_scale * face)


def to_crop(points: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Photo pixels → crop pixels. points: [n, 2] or [n, 3] (z scaled like x, y)."""
    scale = size / (box[2] - box[0])
    out = np.asarray(points, np.float64).copy()
    out[:, 0] = (out[:, 0] - box[0]) * scale
    out[:, 1] = (out[:, 1] - box[1]) * scale
    if out.shape[1] > 2:
        out[:, 2:] *= scale
    return out


def inside_mask(box: tuple[int, int, int, int], width: int, height: int, size: int) -> np.ndarray:
    """[size, size] bool: which crop pixels (centres) come from inside the w × h photo."""
    scale = size / (box[2] - box[0])
    centres = (np.arange(size) + 0.5) / scale  # crop pixel centres, in photo pixels from the box corner
    xs = (centres + box[0] >= 0) & (centres + box[0] <= width)
    ys = (centres + box[1] >= 0) & (centres + box[1] <= height)
    return ys[:, None] & xs[None, :]
