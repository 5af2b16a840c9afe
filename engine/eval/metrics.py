"""The numbers of ``gen3dface eval`` (seed paper §4, Tables 1 and 2), from embeddings and pixels.

Pure numpy/scipy/skimage: the embedders produce vectors, these functions reduce them.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): the FID of two feature sets.

    ‖mu1 − mu2‖² + tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½). mu: [D], sigma: [D, D].
    """
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product (few samples): regularise, as FID code does
        eps = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets [Na, D], [Nb, D] (each needs ≥ 2 rows)."""
    def stats(f):
        return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))

    return frechet_distance(*stats(np.asarray(features_a, np.float64)), *stats(np.asarray(features_b, np.float64)))


def identity_summary(distances: list[float], threshold: float) -> dict:
    """Mean / min / max distance and the share under ``threshold`` (a match); empty → None values."""
    if not distances:
        return {"n": 0, "mean": None, "min": None, "max": None, "match_rate": None}
    d = np.asarray(distances, np.float64)
    return {"n": int(d.size), "mean": round(float(d.mean()), 4), "min": round(float(d.min()), 4),
            "max": round(float(d.max()), 4), "match_rate": round(float((d < threshold).mean()), 4)}


def pairwise(vectors: list[np.ndarray], distance) -> list[float]:
    """``distance`` over all unordered pairs of ``vectors`` (O2O identity)."""
    return [distance(a, b) for a, b in itertools.combinations(vectors, 2)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images [H, W, 3] (inf when equal)."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 images [H, W, 3] (skimage, Gaussian window as in Wang et al.)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


class Lpips:
    """LPIPS from a local TorchScript file: ``model(x, y)`` with x, y [N, 3, H, W] in [−1, 1] → [N] or [N,1,1,1].

    Export it once from the ``lpips`` package (BSD-2-Clause), e.g. ``torch.jit.trace(lpips.LPIPS(net='alex'),
    (x, y))``; nothing is downloaded here.
    """

    def __init__(self, model: Path):
        from .embedders import _model_file, require

        self.torch = require("torch", "torch")
        self.module = self.torch.jit.load(str(_model_file(model, "LPIPS", "--lpips MODEL.pt")),
                                          map_location="cpu").eval()

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        def t(x):
            return self.torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)

        with self.torch.no_grad():
            return float(self.module(t(a), t(b)).reshape(-1)[0])
