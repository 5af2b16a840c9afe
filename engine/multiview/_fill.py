"""Colours for the parts of the head the photo does not show (projection backend).

The projection backend (DESIGN.md, "Data flow") stands in for the diffusion model's
hallucinated back of the head (Gen3D-Face §3.2 generates 360° views): what the photo does
not see is filled with hair and skin colours estimated from the photo, diffused over the
mesh so the fill meets the projected texture without seams.

- ``skin_and_hair``: skin = robust median of forehead/cheek patches (mediapipe landmarks)
  or of the frontal, squarely seen mesh points; hair = median of the matte's foreground
  above the forehead.
- ``hair_prior``: a smooth 0..1 "hairness" over the head from its geometry (scalp above
  the forehead at the front, down to the nape at the back).
- ``diffuse_fill``: per-vertex colours minimising data + prior + graph-Laplacian
  smoothness terms (one sparse solve), i.e. a harmonic fill across the mesh, which knows
  nothing of UV seams.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

log = logging.getLogger(__name__)

#: mediapipe face-mesh points on the forehead and cheeks (skin without brows, eyes, lips).
FOREHEAD_IDS = (151, 108, 337, 9)
CHEEK_IDS = (50, 280, 205, 425, 117, 346)
#: Top of the forehead (the hairline's lowest point in the middle).
FOREHEAD_TOP_ID = 10
#: Used when the photo shows no hair above the forehead (cropped or bald): a neutral dark brown.
DEFAULT_HAIR = np.array([0.22, 0.16, 0.12], np.float32)


def _median(colours: np.ndarray) -> np.ndarray | None:
    return None if len(colours) < 8 else np.median(colours, axis=0).astype(np.float32)


def skin_and_hair(
    crop: np.ndarray,
    alpha: np.ndarray,
    landmarks: np.ndarray | None,
    frontal_colours: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Skin and hair colours from the photo.

    crop: float32 [S, S, 3] in [0, 1]; alpha: bool [S, S] foreground;
    landmarks: [478, 2|3] crop pixels (mediapipe) or None;
    frontal_colours: [N, 3] colours of squarely seen face points (fallback for skin).
    Returns (skin [3], hair [3], hair_found).
    """
    s = crop.shape[0]
    skin = None
    top_row = None
    if landmarks is not None and len(landmarks) > max(FOREHEAD_IDS + CHEEK_IDS):
        r = max(2, int(0.015 * s))
        patches = []
        for i in FOREHEAD_IDS + CHEEK_IDS:
            x, y = int(landmarks[i, 0]), int(landmarks[i, 1])
            patch = crop[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            patches.append(patch.reshape(-1, 3))
        skin = _median(np.concatenate(patches))
        top_row = float(landmarks[FOREHEAD_TOP_ID, 1]) - 0.02 * s
    if skin is None:
        skin = _median(frontal_colours)
    if skin is None:
        skin = np.array([0.75, 0.58, 0.48], np.float32)
    rows = np.nonzero(alpha.any(axis=1))[0]
    if top_row is None and len(rows):
        # No landmarks: the top 15 % of the foreground is hair (or hat), as seen from the front.
        top_row = rows[0] + 0.15 * (rows[-1] - rows[0])
    hair = None
    if top_row is not None and top_row > 0:
        fg = alpha[: int(top_row)]
        hair = _median(crop[: int(top_row)][fg])
    if hair is None:
        return skin, DEFAULT_HAIR.copy(), False
    return skin, hair, True


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def hair_prior(vertices: np.ndarray) -> np.ndarray:
    """A smooth hairness in [0, 1] per vertex from head geometry (Blender world, face to −Y).

    The cranium is approximated by a sphere of radius R = half the head's width (x extent
    of the vertices above the lowest ear height), centred R·1.05 below the top of the head.
    Hair starts 0.45 R above that centre at the front and 0.3 R below it at the back.
    vertices: [V, 3]. Returns [V] float32.
    """
    v = np.asarray(vertices, dtype=np.float64)
    z_top = v[:, 2].max()
    upper = v[v[:, 2] > z_top - 0.12 * np.ptp(v[:, 2]) - 1e-9]
    r = 0.5 * max(np.ptp(v[:, 0]), 1e-6)
    zc = z_top - 1.05 * r
    yc = 0.5 * (v[:, 1].min() + v[:, 1].max()) if len(upper) == 0 else float(np.median(upper[:, 1]))
    back = _smoothstep(v[:, 1] - yc, -0.3 * r, 0.6 * r)  # 0 at the face, 1 at the back
    threshold = zc + r * (0.45 - 0.75 * back)
    return _smoothstep(v[:, 2], threshold - 0.12 * r, threshold + 0.12 * r).astype(np.float32)


def edge_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Graph Laplacian of the mesh edges with weights (h / |e|)², h = mean edge length.

    The weights make the smoothness term metric (a fine and a coarse mesh of the same head
    diffuse over the same distance in metres). Returns (L [V, V] sparse, h).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    length = np.maximum(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1), 1e-9)
    h = float(length.mean())
    n = len(v)
    a = sp.coo_matrix(((h / length) ** 2, (e[:, 0], e[:, 1])), shape=(n, n))
    a = (a + a.T).tocsr()
    return (sp.diags(np.asarray(a.sum(axis=1)).ravel()) - a).tocsr(), h


def diffuse_fill(
    vertices: np.ndarray,
    faces: np.ndarray,
    observed: np.ndarray,
    weight: np.ndarray,
    prior: np.ndarray,
    *,
    data_strength: float = 20.0,
    decay_length: float = 0.03,
) -> np.ndarray:
    """Per-vertex colours: observed where seen, the prior far away, smooth in between.

    Minimises Σ_i k·w_i |c_i − obs_i|² + μ Σ_i |c_i − prior_i|² + Σ_edges (h/|e|)² |c_i − c_j|²,
    whose normal equations (k·W + μ·I + L) c = k·W·obs + μ·prior are one sparse solve.
    With μ = (h / decay_length)² the prior takes over about ``decay_length`` metres away
    from the last observation, whatever the mesh resolution.
    vertices: [V, 3]; faces: [F, 3]; observed, prior: [V, 3]; weight: [V] in [0, 1].
    Returns [V, 3] float32.
    """
    n = len(observed)
    lap, h = edge_laplacian(vertices, faces)
    mu = (h / decay_length) ** 2
    dw = data_strength * np.clip(weight, 0, 1)
    a = (sp.diags(dw + mu) + lap).tocsc()
    rhs = dw[:, None] * observed + mu * prior
    out = spsolve(a, rhs)
    return np.asarray(out, dtype=np.float32).reshape(n, 3).clip(0, 1)
