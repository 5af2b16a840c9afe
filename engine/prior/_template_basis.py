"""The built-in head's deformation model: smooth, named displacement fields.

FLAME's shape space is a PCA of scans; we have no scans, so the template's "principal
components" are hand-made smooth fields anchored at mediapipe landmarks (Gaussian or
smooth-step weights times a direction). Each field is scaled so that a coefficient of 1
is about one standard deviation of adult variation (anthropometric spreads of a few mm
or a few %), so the fitter's prior is simply ``‖coefficients‖²`` (as for FLAME's PCA).

Shape (``SHAPE_NAMES``) covers head and face proportions; expression (``EXPR_NAMES``)
covers smile, brow raise, eye closing and pucker; the jaw is a rotation of the lower face
about the temporo-mandibular joints, like FLAME's jaw joint.
"""
from __future__ import annotations

import numpy as np

SHAPE_NAMES = (
    "face_width", "lower_face_height", "head_width", "head_depth", "head_height", "jaw_width",
    "nose_length", "nose_width", "eye_distance", "eye_height", "chin", "brow_ridge",
    "mouth_width", "mouth_height", "cheek_fullness", "lip_thickness",
)
EXPR_NAMES = ("smile", "brow_raise", "eye_close", "pucker")

#: Jaw joint (between the ears, in front of them), metres, Blender world.
JAW_PIVOT = np.array([0.0, 0.006, -0.012])


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(v: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """[V] Gaussian weight around one point [3] or the max over several [K, 3]."""
    c = np.atleast_2d(centre)
    d2 = ((v[:, None, :] - c[None]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / sigma ** 2).max(axis=1)


def _field(v: np.ndarray, weight: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[V, 3] = weight [V] × direction ([3] or [V, 3])."""
    return weight[:, None] * np.broadcast_to(direction, v.shape)


def _anchors(lmk: np.ndarray) -> dict[str, np.ndarray]:
    """Named points from the canonical landmarks [478, 3] (both sides where paired)."""
    return {
        "nose_tip": lmk[4], "nose_base": lmk[[48, 278]], "chin": lmk[152], "forehead": lmk[10],
        "eyes": lmk[[468, 473]], "brows": lmk[[105, 334]], "mouth": (lmk[13] + lmk[14]) / 2,
        "corners": lmk[[61, 291]], "gonion": lmk[[172, 397]], "cheeks": lmk[[50, 280]],
        "upper_lids": lmk[[159, 386]],
    }


def shape_basis(v: np.ndarray, normals: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    """[n_shape, V, 3] displacement per unit coefficient, in metres."""
    a = _anchors(lmk)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    front = _smoothstep((0.02 - y) / 0.06)  # 1 on the face, 0 behind the ears
    z_eye = a["eyes"][0, 2]
    sx = np.sign(x)
    fields = [
        _field(v, front, np.stack([x * 0.05, 0 * x, 0 * x], 1)),  # face_width ±5 %
        _field(v, front * _smoothstep((z_eye - z) / 0.03), np.stack([0 * x, 0 * x, (z - z_eye) * 0.06], 1)),
        np.stack([x * 0.04, 0 * x, 0 * x], 1),  # head_width ±4 %
        _field(v, _smoothstep(y / 0.05), np.stack([0 * x, y * 0.05, 0 * x], 1)),  # head_depth (occiput)
        _field(v, _smoothstep(z / 0.05), np.stack([0 * x, 0 * x, z * 0.05], 1)),  # head_height (vault)
        _field(v, _gauss(v, a["gonion"], 0.025), np.stack([sx * 0.005, 0 * x, 0 * x], 1)),  # jaw_width
        _field(v, _gauss(v, a["nose_tip"], 0.015), np.array([0, -0.004, -0.001])),  # nose_length
        _field(v, _gauss(v, a["nose_base"], 0.012), np.stack([sx * 0.002, 0 * x, 0 * x], 1)),  # nose_width
        _field(v, _gauss(v, a["eyes"], 0.016), np.stack([sx * 0.003, 0 * x, 0 * x], 1)),  # eye_distance
        _field(v, _gauss(v, a["eyes"], 0.016), np.array([0, 0, 0.003])),  # eye_height
        _field(v, _gauss(v, a["chin"], 0.02), np.array([0, -0.004, -0.003])),  # chin
        _field(v, _gauss(v, a["brows"], 0.018), np.array([0, -0.003, 0])),  # brow_ridge
        _field(v, _gauss(v, a["mouth"], 0.018), np.stack([(x - a["mouth"][0]) * 0.1, 0 * x, 0 * x], 1)),
        _field(v, _gauss(v, a["mouth"], 0.018), np.array([0, 0, 0.003])),  # mouth_height
        _field(v, _gauss(v, a["cheeks"], 0.022), normals * 0.004),  # cheek_fullness
        _field(v, _gauss(v, a["mouth"], 0.010), np.array([0, -0.002, 0])),  # lip_thickness
    ]
    return np.stack(fields).astype(np.float64)


def expr_basis(v: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    """[n_expr, V, 3] displacement per unit coefficient (1 ≈ a clear but moderate expression)."""
    a = _anchors(lmk)
    x = v[:, 0]
    sx = np.sign(x)
    zero = 0 * x
    smile = _field(v, _gauss(v, a["corners"], 0.012), np.stack([sx * 0.005, zero + 0.003, zero + 0.005], 1))
    brow = _field(v, _gauss(v, a["brows"], 0.018), np.array([0, 0, 0.006]))
    close = _field(v, _gauss(v, a["upper_lids"], 0.006), np.array([0, 0, -0.004]))
    pucker = _field(v, _gauss(v, a["mouth"], 0.015), np.stack([-(x - a["mouth"][0]) * 0.25, zero - 0.004, zero], 1))
    return np.stack([smile, brow, close, pucker]).astype(np.float64)


def jaw_weights(v: np.ndarray, lmk: np.ndarray) -> np.ndarray:
    """[V] in [0, 1]: how rigidly each vertex follows the jaw rotation.

    1 below the lip line (between inner-lip landmarks 13 and 14) on the lower face, fading
    out behind the jaw angle and down the neck so the skin stretches instead of tearing.
    """
    z_lip = 0.5 * (lmk[13, 2] + lmk[14, 2])
    chin = lmk[152]
    below_lip = _smoothstep((z_lip - v[:, 2]) / 0.004 + 0.5)
    in_front = _smoothstep((0.0 - v[:, 1]) / 0.03)
    above_neck = _smoothstep((v[:, 2] - (chin[2] - 0.035)) / 0.03)
    return below_lip * in_front * above_neck
