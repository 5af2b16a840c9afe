"""The interface every head model of the prior stage implements (FLAME or the built-in template).

The prior (paper §3.1: "estimate a FLAME head from the input") fits a head model to the
photo's mediapipe landmarks. The fitter only needs what is here: a differentiable
``vertices(shape, expr, jaw)`` and the 3D points that correspond to some of mediapipe's 478
face-mesh landmarks.

Model space = Blender world axes (Z up, face looking toward −Y), metres, head roughly
centred at the origin (docs/architecture.md "Conventions").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

#: Number of points of mediapipe's face mesh with iris refinement.
MEDIAPIPE_POINTS = 478


@runtime_checkable
class HeadModel(Protocol):
    """A parametric head: linear shape/expression coefficients (+ optional jaw) → mesh."""

    name: str  # "flame" | "template"
    faces: np.ndarray  # [F, 3] int64
    n_shape: int  # length of the shape coefficient vector (may be 0)
    n_expr: int  # length of the expression coefficient vector (may be 0)
    landmark_ids: np.ndarray  # [L] int64, indices into mediapipe's 478 face-mesh points

    def vertices(self, shape: Tensor, expr: Tensor, jaw: Tensor | None = None) -> Tensor:
        """Mesh vertices in model space (differentiable w.r.t. all inputs).

        shape: Tensor  # [n_shape]
        expr: Tensor   # [n_expr]
        jaw: Tensor    # [3] axis-angle of the jaw, or None (= closed / rest)
        returns        # [V, 3] metres, Blender world axes
        """
        ...

    def landmarks(self, verts: Tensor) -> Tensor:
        """The 3D points of ``landmark_ids`` on a mesh of this model.

        verts: Tensor  # [V, 3] (output of ``vertices``)
        returns        # [L, 3]
        """
        ...


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as barycentric points on mesh triangles.

    Both head models express their mediapipe correspondence this way (FLAME ships it as
    ``mediapipe_landmark_embedding.npz``; the template builds its own).
    """

    face_idx: np.ndarray  # [L] int64, triangle index into the model's faces
    bary: np.ndarray  # [L, 3] float, barycentric weights (rows sum to 1)
    mp_ids: np.ndarray  # [L] int64, mediapipe point index of each landmark

    def __post_init__(self) -> None:
        n = len(self.face_idx)
        if self.bary.shape != (n, 3) or self.mp_ids.shape != (n,):
            raise ValueError(
                f"landmark embedding shapes disagree: face_idx {self.face_idx.shape}, "
                f"bary {self.bary.shape}, mp_ids {self.mp_ids.shape}"
            )

    def points(self, verts: Tensor, faces: Tensor | np.ndarray) -> Tensor:
        """Barycentric interpolation of the embedded triangles.

        verts: Tensor  # [..., V, 3]
        faces: Tensor  # [F, 3] int
        returns        # [..., L, 3]
        """
        faces_t = torch.as_tensor(faces, device=verts.device, dtype=torch.long)
        tri = faces_t[torch.as_tensor(self.face_idx, device=verts.device, dtype=torch.long)]  # [L, 3]
        corners = verts[..., tri, :]  # [..., L, 3 corners, 3 xyz]
        w = torch.as_tensor(self.bary, device=verts.device, dtype=verts.dtype)  # [L, 3]
        return (w.unsqueeze(-1) * corners).sum(dim=-2)
