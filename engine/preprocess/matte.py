"""Foreground matte of the head crop: mediapipe selfie segmentation, refined at the edges.

The paper's out-of-domain inputs are photos "with background removed" (Gen3D-Face §4,
FFHQ evaluation); the multi-view model is conditioned on such a cut-out. The selfie
segmenter works at 256 px, so its edge is soft and blocky at 512; a colour-guided filter
(He et al., "Guided Image Filtering", 2010) snaps the transition to the image's own
edges (hair strands, ears) at the cost of a few box filters.
"""
from __future__ import annotations

import cv2
import numpy as np

from .detect import process


def segment(rgb: np.ndarray) -> np.ndarray:
    """Person probability [S, S] float32 in [0, 1] for an RGB crop [S, S, 3] uint8."""
    # model 0: the general 256×256 model (model 1, landscape 144×256, suits video calls).
    result = process("selfie_segmentation", rgb, model_selection=0)
    mask = result.segmentation_mask
    if mask is None:
        return np.zeros(rgb.shape[:2], np.float32)
    return np.clip(np.asarray(mask, np.float32), 0.0, 1.0)


def smoothstep(x: np.ndarray, lo: float = 0.25, hi: float = 0.75) -> np.ndarray:
    """Soft threshold: 0 below lo, 1 above hi, C1-smooth between."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Colour guided filter.

    guide: [H, W, 3] float32 in [0, 1]; src: [H, W] float32. Returns [H, W] float32.
    Per window: q = a·I + b with a = (Σ_I + eps·1)⁻¹ cov(I, p), b = mean(p) − a·mean(I).
    """
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)  # [H, W, 3]
    mean_p = box(src)  # [H, W]
    cov = box(guide * src[..., None]) - mean_i * mean_p[..., None]  # [H, W, 3]
    r, g, b_ = (guide[..., c] for c in range(3))
    mr, mg, mb = (mean_i[..., c] for c in range(3))
    # Window covariance of the guide (symmetric 3×3), regularised: entries [[a b c] [b d e] [c e f]].
    a = box(r * r) - mr * mr + eps
    b = box(r * g) - mr * mg
    c = box(r * b_) - mr * mb
    d = box(g * g) - mg * mg + eps
    e = box(g * b_) - mg * mb
    f = box(b_ * b_) - mb * mb + eps
    # Closed-form inverse by cofactors (a batched np.linalg.solve is 4× slower here).
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    coef = np.stack([i00 * cov[..., 0] + i01 * cov[..., 1] + i02 * cov[..., 2],
                     i01 * cov[..., 0] + i11 * cov[..., 1] + i12 * cov[..., 2],
                     i02 * cov[..., 0] + i12 * cov[..., 1] + i22 * cov[..., 2]], -1) / det[..., None]
    offset = mean_p - (coef * mean_i).sum(-1)
    return (box(coef) * guide).sum(-1) + box(offset)


def keep_head(alpha: np.ndarray, seed: tuple[float, float]) -> np.ndarray:
    """Drop foreground blobs not connected to the face (another person, a poster).

    alpha: [S, S] float32; seed: (x, y) crop pixel inside the face. Returns [S, S] float32.
    """
    solid = (alpha > 0.5).astype(np.uint8)
    n, labels = cv2.connectedComponents(solid, connectivity=8)
    if n <= 2:
        return alpha
    x = int(np.clip(seed[0], 0, alpha.shape[1] - 1))
    y = int(np.clip(seed[1], 0, alpha.shape[0] - 1))
    label = labels[y, x]
    if label == 0:
        return alpha
    # Zero the other blobs and their soft fringe (but never the kept blob's own fringe).
    kernel = np.ones((5, 5), np.uint8)
    keep = cv2.dilate((labels == label).astype(np.uint8), kernel) > 0
    other = cv2.dilate(((labels != label) & (solid > 0)).astype(np.uint8), kernel) > 0
    return np.where(other & ~keep, 0.0, alpha).astype(np.float32)


def matte(rgb: np.ndarray, face_centre: tuple[float, float], radius_frac: float = 1 / 128,
          eps: float = 1e-3) -> np.ndarray:
    """Foreground alpha [S, S] uint8 for an RGB crop [S, S, 3] uint8."""
    prob = smoothstep(segment(rgb))
    guide = rgb.astype(np.float32) / 255.0
    radius = max(1, int(round(radius_frac * rgb.shape[0])))
    alpha = np.clip(guided_filter(guide, prob, radius, eps), 0.0, 1.0)
    alpha = keep_head(alpha, face_centre)
    return np.rint(alpha * 255.0).astype(np.uint8)
