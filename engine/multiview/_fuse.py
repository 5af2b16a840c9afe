"""Fusing the colours several photos give the same surface points (projection backend).

Each photo k gives colours c_k [N, 3] and weights w_k [N] (``recon.texture.project_points``:
visibility × cos^p view angle × matte border). Before they are mixed, each further photo's
exposure and white balance are matched to the input view's: a per-channel gain, the ratio of
the medians over the points both see well (clipped to [1/MAX_GAIN, MAX_GAIN]; identity when
they share too little). The fused colour weights each photo by w_k² (the most squarely seen
photo dominates, so a side photo does not blur a frontal face), and the fused weight is
Σ w_k (points seen twice are trusted more).

A further photo is de-shaded onto the input view's albedo (``projection._deshade_like``), fitted
only where that albedo is the input's shading really taken out (``deshaded_reference``): the
input view keeps non-skin pixels as taken (factor 1) and stops its de-shading at a clip, and
points of either kind tilted the further photo's fitted light (measured: +0.3 dB on the side
views of ``tests/engine/test_multiphoto.py``, +1.1 dB on its lightest skin tone).
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


#: Fewest reference points for the de-shading fit to keep to the trusted ones (fewer: all are used).
MIN_DESHADED = 200


def deshaded_reference(raw: np.ndarray, albedo: np.ndarray, max_gain: float) -> np.ndarray:
    """bool [N]: the reference points whose albedo is the input photo's colour with its shading
    really divided out, i.e. a de-shading factor lum(raw) / lum(albedo) of at most 0.99 (not a
    pixel kept as taken, factor 1) and above 1.01 / ``max_gain`` (not at the de-shading's
    clip). raw, albedo: [N, 3] the input photo as taken and de-shaded at the points. All True
    when fewer than ``MIN_DESHADED`` points qualify."""
    lum = np.array([0.2126, 0.7152, 0.0722])
    factor = (np.asarray(raw, np.float64) @ lum) / np.maximum(np.asarray(albedo, np.float64) @ lum, 1e-3)
    ok = (factor <= 0.99) & (factor > 1.01 / max_gain)
    return ok if ok.sum() >= MIN_DESHADED else np.ones(len(factor), bool)


def fuse(colours: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(colour [N, 3], weight [N]) from per-photo colours [N, 3] and weights [N] (see the module docstring)."""
    w = np.stack([np.asarray(x, np.float64) for x in weights])  # [K, N]
    c = np.stack([np.asarray(x, np.float64) for x in colours])  # [K, N, 3]
    w2 = w * w
    total2 = w2.sum(0)
    colour = np.where(total2[:, None] > 0, (w2[..., None] * c).sum(0) / np.maximum(total2, 1e-12)[:, None], 0)
    return colour.astype(np.float32), w.sum(0).astype(np.float32)


def demote_mirror(first_w: np.ndarray, cos_first: np.ndarray, others: list[np.ndarray], min_cos: float,
                  cos_ramp: float, full_weight: float) -> np.ndarray:
    """[N] the input view's weight, less its mirror share where further photos see the point.

    Where the input view faces a point more obliquely than ``min_cos`` its weight is all
    mirror fill (the other side's colours); once further photos see the point with
    ``full_weight`` that fill gives way to them. first_w, cos_first: [N]; others: [K−1] × [N].
    """
    if not others:
        return first_w
    t = np.clip((np.asarray(cos_first) - min_cos) / max(cos_ramp, 1e-6), 0, 1)
    mirror_share = 1 - t * t * (3 - 2 * t)
    seen = np.clip(np.sum(others, axis=0) / full_weight, 0, 1)
    return (np.asarray(first_w) * (1 - mirror_share * seen)).astype(np.float32)
