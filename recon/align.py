"""Similarity alignment of one surface onto another (an artist's head mesh onto a run's head).

Shape-to-shape, no landmarks: both surfaces are sampled by area; principal axes give 24
candidate rotations (every signed axis permutation with determinant +1, so PCA's sign and
order ambiguities cannot trap it), scale from the RMS radius; each candidate is refined by
trimmed ICP with a similarity (Umeyama) step against closest points on the target, and the
lowest trimmed residual wins among the candidates whose scale stayed within 1/2-2 × the
RMS-radius ratio (free-scale ICP can shrink a mesh onto a patch of the target, residual 0).
This is the shape path of ``bake --align auto``; the landmark path that seeds ``icp`` from
face landmarks needs mediapipe and lives in the engine (``engine/landmark_align.py``).
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .uv_transfer import closest_faces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Similarity:
    """x ↦ scale · rotation @ x + translation. rotation [3, 3]; translation [3];
    residual: trimmed RMS distance (metres) of the aligned samples to the target."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    residual: float = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x: [N, 3] → [N, 3]."""
        return self.scale * np.asarray(x) @ self.rotation.T + self.translation

    @property
    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity mapping src [N, 3] onto dst [N, 3] (Umeyama 1991)."""
    w = np.ones(len(src)) if weights is None else weights
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1
    rot = u @ s @ vt
    var = float(w @ (a * a).sum(1))
    scale = float(np.trace(np.diag(d) @ s) / max(var, 1e-30))
    return Similarity(scale, rot, md - scale * rot @ ms)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n points [n, 3] uniformly by area on the mesh."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(faces), n, p=area / area.sum())
    r = rng.random((n, 2))
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    b = np.stack([1 - r.sum(1), r[:, 0], r[:, 1]], -1)
    return np.einsum("nk,nkc->nc", b, tri[face])


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centre = points.mean(0)
    c = points - centre
    _, vecs = np.linalg.eigh(c.T @ c)
    if np.linalg.det(vecs) < 0:
        vecs[:, 0] *= -1
    return centre, vecs, float(np.sqrt((c * c).sum(1).mean()))


def _rotations() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return out


def _rodrigues(w: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(w))
    if angle < 1e-15:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _plane_step(moved: np.ndarray, near: np.ndarray, normal: np.ndarray) -> Similarity:
    """One linearised point-to-plane similarity step (rotation ω, scale 1 + σ, shift δ about the
    points' centroid): minimises Σ (n · (p' − q))²; converges in a few steps where
    point-to-point ICP crawls along a smooth surface."""
    c = moved.mean(0)
    pc = moved - c
    a = np.concatenate([np.cross(pc, normal), (normal * pc).sum(1, keepdims=True), normal], 1)  # [N, 7]
    b = -(normal * (moved - near)).sum(1)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    rot, scale = _rodrigues(x[:3]), 1.0 + x[3]
    return Similarity(scale, rot, c + x[4:] - scale * rot @ c)


def icp(src: np.ndarray, target_v: np.ndarray, target_f: np.ndarray, init: Similarity, iterations: int = 30,
        trim: float = 0.85, tree_points: np.ndarray | None = None) -> Similarity:
    """Trimmed similarity ICP of src points [N, 3] onto the target mesh, from ``init``.

    Far from the target: point-to-point (Umeyama) steps against a dense target sample
    (``tree_points``); the last steps: point-to-plane against exact closest points on the
    target's faces (no sampling bias, fast convergence on smooth surfaces).
    """
    cur = init
    tree = cKDTree(tree_points) if tree_points is not None else None
    fn = np.cross(target_v[target_f[:, 1]] - target_v[target_f[:, 0]], target_v[target_f[:, 2]] - target_v[target_f[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-30)
    for it in range(iterations):
        moved = cur.apply(src)
        coarse = tree is not None and it < iterations // 2
        if coarse:
            _, j = tree.query(moved)
            near = tree_points[j]
        else:
            face, bary = closest_faces(moved, target_v, target_f)
            near = np.einsum("nk,nkc->nc", bary, target_v[target_f[face]])
        d = np.linalg.norm(moved - near, axis=1)
        keep = d <= np.quantile(d, trim)
        step = umeyama(moved[keep], near[keep]) if coarse else _plane_step(moved[keep], near[keep], fn[face[keep]])
        cur = Similarity(step.scale * cur.scale, step.rotation @ cur.rotation,
                         step.scale * step.rotation @ cur.translation + step.translation,
                         float(np.sqrt(np.mean(d[keep] ** 2))))
    moved = cur.apply(src)
    face, bary = closest_faces(moved, target_v, target_f)
    d = np.linalg.norm(moved - np.einsum("nk,nkc->nc", bary, target_v[target_f[face]]), axis=1)
    res = float(np.sqrt(np.mean(np.sort(d)[: max(1, int(trim * len(d)))] ** 2)))
    return Similarity(cur.scale, cur.rotation, cur.translation, res)


def auto_align(vertices: np.ndarray, faces: np.ndarray, target_v: np.ndarray, target_f: np.ndarray,
               n: int = 2000, seed: int = 0) -> Similarity:
    """The similarity that puts the mesh (vertices [V, 3], faces [F, 3]) on the target surface."""
    src = sample_surface(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), n, seed)
    tv, tf = np.asarray(target_v, np.float64), np.asarray(target_f, np.int64)
    dense = sample_surface(tv, tf, 20 * n, seed + 1)
    cs, es, rs = _frame(src)
    ct, et, rt = _frame(dense)
    best = None
    scale = rt / rs
    for m in _rotations():
        rot = et @ m @ es.T
        init = Similarity(scale, rot, ct - scale * rot @ cs)
        cand = icp(src[::4], tv, tf, init, iterations=12, tree_points=dense)
        # free-scale ICP can shrink the mesh onto a patch of the target (residual → 0): a
        # candidate whose scale left [1/2, 2] × the RMS-radius ratio is not a fit
        if not 0.5 <= cand.scale / scale <= 2.0:
            continue
        if best is None or cand.residual < best.residual:
            best = cand
    if best is None:  # every candidate collapsed: the plain RMS-radius frame
        best = Similarity(scale, et @ es.T, ct - scale * et @ es.T @ cs, np.inf)
    final = icp(src, tv, tf, best, iterations=20, tree_points=dense)
    log.info("auto alignment: scale %.4f, residual %.2f mm", final.scale, 1000 * final.residual)
    return final
