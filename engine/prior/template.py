"""The built-in open head model, used when no FLAME file is installed.

FLAME (paper §3.1) cannot be shipped: its licence asks every user to register. This
template needs no download: ``_template_shape`` sculpts a closed head (cranium, face,
ears, neck) around mediapipe's canonical face, ``_template_basis`` gives it named smooth
shape/expression fields and a jaw joint, and this module caches the result and exposes
it through the ``HeadModel`` interface (``model.py``) the fitter uses.

Landmark correspondence: every mediapipe point has a position on the canonical face;
its closest point on the template surface defines a (triangle, barycentric) embedding,
as FLAME's ``mediapipe_landmark_embedding.npz`` does. The fitter uses the 468 face-mesh
points (the 10 iris points follow the gaze, not the head, and are left out).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..paths import cache_dir
from . import _template_basis as basis
from . import _template_shape as shape
from .model import MEDIAPIPE_POINTS, LandmarkEmbedding

log = logging.getLogger(__name__)

#: Bump when the generator's output changes: the cache is keyed by it.
GENERATOR_VERSION = 2
#: Target vertex count after decimating the marching-cubes surface.
TARGET_VERTICES = 12000
#: The template's fixed UV atlas: packed for this texture size with this gutter (texels), and
#: xatlas' chart cost (bigger charts than its default: ~180 instead of ~440, fewer seams).
UV_RESOLUTION = 1024
UV_PADDING = 4
UV_MAX_COST = 4.0


@dataclass(frozen=True)
class TemplateData:
    """Everything the template model needs, as numpy arrays (what the cache stores).

    vertices: [V, 3] float64 rest shape (metres, Blender world); faces: [F, 3] int64.
    shape_basis: [n_shape, V, 3]; expr_basis: [n_expr, V, 3] metres per unit coefficient.
    jaw_weights: [V] rigid-jaw weight; jaw_pivot: [3] the jaw joint.
    lmk_face_idx: [478] triangle per mediapipe point; lmk_bary: [478, 3] barycentrics.
    """

    vertices: np.ndarray
    faces: np.ndarray
    shape_basis: np.ndarray
    expr_basis: np.ndarray
    jaw_weights: np.ndarray
    jaw_pivot: np.ndarray
    lmk_face_idx: np.ndarray
    lmk_bary: np.ndarray

    def digest(self) -> str:
        """SHA-256 over all arrays (determinism checks, cache keys in result.json)."""
        h = hashlib.sha256()
        for name in self.__dataclass_fields__:
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return h.hexdigest()


def _decimate(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``TARGET_VERTICES``, kept only if still a closed 2-manifold."""
    import fast_simplification
    import trimesh

    if len(v) <= TARGET_VERTICES:
        return v, f
    v2, f2 = fast_simplification.simplify(v.astype(np.float32), f.astype(np.int32),
                                          target_reduction=1 - TARGET_VERTICES / len(v))
    mesh = trimesh.Trimesh(np.asarray(v2, np.float64), np.asarray(f2, np.int64), process=True)
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2:
        return np.asarray(mesh.vertices), np.asarray(mesh.faces, np.int64)
    log.info("decimated template is not a closed 2-manifold; keeping %d vertices", len(v))
    return v, f


def _embed(v: np.ndarray, f: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point of each of ``points`` [N, 3] → (triangle [N], barycentric [N, 3]).

    Candidates are the triangles around the 32 nearest vertices (no rtree dependency).
    """
    import trimesh
    from scipy.spatial import cKDTree

    _, near = cKDTree(v).query(points, k=32)  # [N, 32]
    vert_faces = trimesh.Trimesh(v, f, process=False).vertex_faces  # [V, max valence], −1 padded
    tri_out = np.empty(len(points), np.int64)
    bary_out = np.empty((len(points), 3))
    for i, p in enumerate(points):
        cand = np.unique(vert_faces[near[i]])
        cand = cand[cand >= 0]
        closest = trimesh.triangles.closest_point(v[f[cand]], np.repeat(p[None], len(cand), 0))
        best = int(np.argmin(np.linalg.norm(closest - p, axis=1)))
        tri_out[i] = cand[best]
        b = trimesh.triangles.points_to_barycentric(v[f[cand[best]]][None], closest[best][None])[0]
        b = np.clip(b, 0.0, 1.0)
        bary_out[i] = b / b.sum()
    return tri_out, bary_out


def generate() -> TemplateData:
    """Build the template from scratch (deterministic; ~5 s on one core)."""
    import trimesh

    v, f = shape.build_surface()
    v, f = _decimate(v, f)
    lmk = shape.canonical_landmarks()
    tri, bary = _embed(v, f, lmk)
    normals = np.asarray(trimesh.Trimesh(v, f, process=False).vertex_normals)
    # anchors for the fields are the landmarks as they sit on the surface
    on_surface = (bary[:, :, None] * v[f[tri]]).sum(axis=1)
    return TemplateData(
        vertices=v, faces=f,
        shape_basis=basis.shape_basis(v, normals, on_surface),
        expr_basis=basis.expr_basis(v, on_surface),
        jaw_weights=basis.jaw_weights(v, on_surface),
        jaw_pivot=basis.JAW_PIVOT.copy(),
        lmk_face_idx=tri, lmk_bary=bary,
    )


def cache_path() -> Path:
    return cache_dir() / "template" / f"head_v{GENERATOR_VERSION}.npz"


def load_data(use_cache: bool = True) -> TemplateData:
    """The template, from the cache when present and readable, else generated (and cached)."""
    path = cache_path()
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                return TemplateData(**{k: z[k] for k in TemplateData.__dataclass_fields__})
        except (OSError, KeyError, ValueError) as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("template cache %s unreadable (%s); rebuilding", path, exc)
    data = generate()
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **{k: getattr(data, k) for k in TemplateData.__dataclass_fields__})
            os.replace(tmp, path)
        except OSError as exc:  # read-only cache: still usable, just slower next time
            log.warning("could not cache the template at %s: %s", path, exc)
    return data


def uv_cache_path(data: TemplateData) -> Path:
    return cache_dir() / "template" / f"head_v{GENERATOR_VERSION}_uv_{data.digest()[:16]}.npz"


def load_uv(data: TemplateData, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The template's UV atlas: (uvs float32 [V', 2] in [0, 1], faces_uv int64 [F, 3]).

    Fitting never changes the topology, so one xatlas unwrap of the rest mesh (~5 s) serves
    every fitted head; it is cached beside the template, keyed by the template's digest.
    """
    from recon.uv import unwrap

    path = uv_cache_path(data)
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                uvs, faces_uv = z["uvs"], z["faces_uv"]
            if faces_uv.shape == data.faces.shape and 0 <= faces_uv.min() and faces_uv.max() < len(uvs):
                return uvs, faces_uv
            log.warning("template UV cache %s does not match the template; rebuilding", path)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("template UV cache %s unreadable (%s); rebuilding", path, exc)
    _, faces_uv, uvs = unwrap(data.vertices, data.faces, resolution=UV_RESOLUTION, padding=UV_PADDING,
                              max_cost=UV_MAX_COST)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, uvs=uvs, faces_uv=faces_uv)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not cache the template UVs at %s: %s", path, exc)
    return uvs, faces_uv


def _axis_angle_matrix(aa: Tensor) -> Tensor:
    """Rodrigues: axis-angle [3] → rotation [3, 3] (differentiable, safe at 0)."""
    theta = torch.sqrt((aa * aa).sum() + 1e-12)
    k = aa / theta
    zero = torch.zeros((), dtype=aa.dtype, device=aa.device)
    kx = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                      torch.stack([-k[1], k[0], zero])])
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + torch.sin(theta) * kx + (1 - torch.cos(theta)) * (kx @ kx)


def _axis_angle_batch(aa: Tensor) -> Tensor:
    """Rodrigues for a batch: axis-angle [..., 3] → rotation [..., 3, 3] (safe at 0)."""
    theta = torch.sqrt((aa * aa).sum(-1) + 1e-12)[..., None, None]
    k = aa / theta[..., 0]
    zero = torch.zeros_like(k[..., 0])
    kx = torch.stack([torch.stack([zero, -k[..., 2], k[..., 1]], -1), torch.stack([k[..., 2], zero, -k[..., 0]], -1),
                      torch.stack([-k[..., 1], k[..., 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + torch.sin(theta) * kx + (1 - torch.cos(theta)) * (kx @ kx)


class TemplateHead:
    """The built-in head as a ``HeadModel`` (torch, differentiable).

    Model space = Blender world (Z up, face toward −Y, metres), head centred at the origin.
    ``jaw`` is an axis-angle [3] about the jaw joint; +x opens the mouth.
    """

    name = "template"

    def __init__(self, data: TemplateData | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.data = data if data is not None else load_data()
        d = self.data
        self.faces = d.faces
        self.n_shape = int(d.shape_basis.shape[0])
        self.n_expr = int(d.expr_basis.shape[0])
        self.shape_names = basis.SHAPE_NAMES
        self.expr_names = basis.EXPR_NAMES
        self.landmark_ids = np.arange(468, dtype=np.int64)
        self.embedding = LandmarkEmbedding(d.lmk_face_idx[:468], d.lmk_bary[:468], self.landmark_ids)
        t = dict(device=device, dtype=dtype)
        self._v = torch.as_tensor(d.vertices, **t)
        self._sb = torch.as_tensor(d.shape_basis, **t)
        self._eb = torch.as_tensor(d.expr_basis, **t)
        self._jw = torch.as_tensor(d.jaw_weights, **t)[:, None]
        self._pivot = torch.as_tensor(d.jaw_pivot, **t)
        self._faces_t = torch.as_tensor(d.faces, device=device, dtype=torch.long)
        self._uv: tuple[np.ndarray, np.ndarray] | None = None
        self._sub64: tuple[Tensor, ...] | None = None
        if len(d.lmk_face_idx) != MEDIAPIPE_POINTS:
            raise ValueError(f"template data has {len(d.lmk_face_idx)} landmarks, expected {MEDIAPIPE_POINTS}")
        # landmark-only evaluation (the fitter's inner loop): the corners of the embedded
        # triangles are the only vertices it needs (~1.4k of ~12k)
        corners = d.faces[d.lmk_face_idx[:468]]  # [L, 3]
        self._sub, inverse = np.unique(corners, return_inverse=True)
        self._sub_tri = torch.as_tensor(inverse.reshape(corners.shape), device=device, dtype=torch.long)
        self._sub_bary = torch.as_tensor(d.lmk_bary[:468], **t)
        sub = torch.as_tensor(self._sub, device=device, dtype=torch.long)
        self._sub_v, self._sub_sb, self._sub_eb = self._v[sub], self._sb[:, sub], self._eb[:, sub]
        self._sub_jw = self._jw[sub]

    def uv_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed UV atlas of the template's topology: (uvs [V', 2], faces_uv [F, 3]); see ``load_uv``."""
        if self._uv is None:
            self._uv = load_uv(self.data)
        return self._uv

    def _deform(self, v0, sb, eb, jw, shape, expr, jaw) -> Tensor:
        v = v0 + torch.einsum("k,kvc->vc", shape.to(v0), sb) + torch.einsum("k,kvc->vc", expr.to(v0), eb)
        if jaw is not None:
            r = _axis_angle_matrix(jaw.to(v0))
            rotated = (v - self._pivot) @ r.T + self._pivot
            v = v + jw * (rotated - v)
        return v

    def vertices(self, shape: Tensor, expr: Tensor, jaw: Tensor | None = None) -> Tensor:
        """shape [n_shape], expr [n_expr], jaw [3] | None → vertices [V, 3]."""
        return self._deform(self._v, self._sb, self._eb, self._jw, shape, expr, jaw)

    def landmark_points(self, shape: Tensor, expr: Tensor, jaw: Tensor | None = None) -> Tensor:
        """``landmarks(vertices(shape, expr, jaw))`` without the other vertices: [L, 3]."""
        v = self._deform(self._sub_v, self._sub_sb, self._sub_eb, self._sub_jw, shape, expr, jaw)
        return (self._sub_bary.unsqueeze(-1) * v[self._sub_tri]).sum(dim=1)

    def landmark_points_batch(self, shape: Tensor, expr: Tensor, jaw: Tensor) -> Tensor:
        """``landmark_points`` for a batch, in float64 (the fitter's finite differences).

        shape [..., n_shape], expr [..., n_expr], jaw [..., 3] → [..., L, 3] float64.
        """
        if self._sub64 is None:
            self._sub64 = tuple(t.double() for t in (self._sub_v, self._sub_sb, self._sub_eb, self._sub_jw,
                                                     self._sub_bary, self._pivot))
        v0, sb, eb, jw, bary, pivot = self._sub64
        v = (v0 + torch.einsum("...k,kvc->...vc", shape.to(v0), sb)
             + torch.einsum("...k,kvc->...vc", expr.to(v0), eb))
        r = _axis_angle_batch(jaw.to(v0))  # [..., 3, 3]
        rotated = (v - pivot) @ r.transpose(-1, -2) + pivot
        v = v + jw * (rotated - v)
        return (bary.unsqueeze(-1) * v[..., self._sub_tri, :]).sum(dim=-2)

    def landmarks(self, verts: Tensor) -> Tensor:
        """verts [V, 3] → the ``landmark_ids`` points [L, 3]."""
        return self.embedding.points(verts, self._faces_t)

    def all_landmarks(self, verts: Tensor) -> Tensor:
        """verts [V, 3] → all 478 mediapipe points [478, 3] (iris points at the eye centres)."""
        full = LandmarkEmbedding(self.data.lmk_face_idx, self.data.lmk_bary, np.arange(MEDIAPIPE_POINTS))
        return full.points(verts, self._faces_t)
