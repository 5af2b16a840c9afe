"""Fusing the colours several photos give the same surface points (projection backend).

Each photo k gives colours c_k [N, 3] and weights w_k [N] (``recon.texture.project_points``:
visibility × cos^p view angle × matte border). Before they are mixed, each further photo's
exposure and white balance are matched to the input view's: a per-channel gain, the ratio of
the medians over the points both see well (clipped to [1/MAX_GAIN, MAX_GAIN]; identity when
they share too little). The fused colour weights each photo by w_k² (the most squarely seen
photo dominates, so a side photo does not blur a frontal face), and the fused weight is
Σ w_k (points seen twice are trusted more).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Weight both photos must have on a point for it to count toward their exposure match.
OVERLAP_WEIGHT = 0.1
#: Fewest shared points for a gain (fewer: the photo keeps its own exposure).
MIN_OVERLAP = 200
#: The exposure gain per channel stays within [1/MAX_GAIN, MAX_GAIN].
MAX_GAIN = 1.6


def exposure_gain(ref_c: np.ndarray, ref_w: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[3] per-channel gain taking photo (c, w) to the reference's exposure over shared points."""
    both = (ref_w > OVERLAP_WEIGHT) & (w > OVERLAP_WEIGHT)
    if both.sum() < MIN_OVERLAP:
        return np.ones(3, np.float32)
    num = np.median(ref_c[both], axis=0)
    den = np.maximum(np.median(c[both], axis=0), 1e-3)
    return np.clip(num / den, 1 / MAX_GAIN, MAX_GAIN).astype(np.float32)


def fuse(colours: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(colour [N, 3], weight [N]) from per-photo colours [N, 3] and weights [N] (see the module docstring)."""
    w = np.stack([np.asarray(x, np.float64) for x in weights])  # [K, N]
    c = np.stack([np.asarray(x, np.float64) for x in colours])  # [K, N, 3]
    w2 = w * w
    total2 = w2.sum(0)
    colour = np.where(total2[:, None] > 0, (w2[..., None] * c).sum(0) / np.maximum(total2, 1e-12)[:, None], 0)
    return colour.astype(np.float32), w.sum(0).astype(np.float32)
