"""The one place that converts between a checkpoint's frame and the engine's world.

A model folder's ``conventions.json`` (``weights/conventions.py``) says where the checkpoint's
cameras are, in its own frame and units, and the similarity ``checkpoint_from_world``. The
network runs in the checkpoint's frame (its volume extent, voxel size and frustum depths are in
its units); everything that leaves the diffusion stage (``views/``, ``transforms.json``) is in
the engine's world (Blender, Z up, metres, head at the origin facing −Y), so recon and the
Blender import need no special case.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from recon.cameras import Camera
from weights.conventions import FLAME_TO_WORLD, Conventions

from . import geometry

_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


class CheckpointFrame:
    """World ↔ checkpoint frame of one model (and one prior, for FLAME-anchored families).

    ``flame_center``: FLAME's template bounding-box centre in FLAME's native frame [3] (what the
    engine's ``FlameModel`` subtracts); needed where the reference places FLAME by its native
    origin (``prior_anchor='flame'``); None there means the prior is centred as FLAME's template.
    """

    def __init__(self, conventions: Conventions, flame_center=None):
        self.conventions = conventions
        m = np.asarray(conventions.checkpoint_from_world, dtype=np.float64)
        if conventions.prior_anchor == "flame" and flame_center is not None:
            shift = np.eye(4)
            shift[:3, 3] = FLAME_TO_WORLD @ np.asarray(flame_center, dtype=np.float64)
            m = m @ shift
        self.matrix = m  # [4, 4] checkpoint ← world
        self.inverse = np.linalg.inv(m)
        self.scale = float(np.cbrt(np.linalg.det(m[:3, :3])))  # checkpoint units per metre

    def points_to_checkpoint(self, points) -> np.ndarray:
        """World points [P, 3] → checkpoint frame [P, 3]."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def _move(self, cam: Camera, m: np.ndarray, scale: float) -> Camera:
        c2w = np.eye(4)
        c2w[:3, :3] = m[:3, :3] @ cam.c2w[:3, :3] / scale
        c2w[:3, 3] = m[:3, :3] @ cam.c2w[:3, 3] + m[:3, 3]
        return Camera(c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.w, cam.h)

    def camera_to_world(self, cam: Camera) -> Camera:
        """A checkpoint-frame camera in the world (a similarity keeps the intrinsics)."""
        return self._move(cam, self.inverse, 1.0 / self.scale)

    def camera_to_checkpoint(self, cam: Camera) -> Camera:
        return self._move(cam, self.matrix, self.scale)

    def checkpoint_cameras(self) -> list[Camera]:
        """The checkpoint's own views (explicit layouts), checkpoint frame, true intrinsics."""
        conv = self.conventions
        fx, fy, cx, cy = conv.intrinsics
        out = []
        for w2c in conv.w2c:
            m = np.eye(4)
            m[:3] = np.asarray(w2c, dtype=np.float64)
            out.append(Camera(np.linalg.inv(m) @ _CV_TO_GL, fx, fy, cx, cy, conv.image_size, conv.image_size))
        return out


def pixel_offset(conventions: Conventions, size: int, latent: int) -> float:
    """Pixels to add to (cx, cy) of the network's cameras so that our continuous-pixel geometry
    (``align_corners=False``, rays through latent-pixel centres) samples what the reference's
    latent-index geometry (``align_corners=True``, rays through integer indices) samples."""
    return 0.5 * size / latent if conventions.pixel_convention == "latent_index" else 0.0


def view_embeddings(conventions: Conventions, targets: list[Camera], reference: Camera,
                    el_sign: float = 1.0, az_sign: float = 1.0) -> torch.Tensor:
    """Each target's view embedding [N, 4] under the family's rule.

    relative: from the cameras (any frame with Z up); zero123 (SyncDreamer's
    ``get_viewpoint_embedding``): the layout's own angles, the input at azimuth 0 and at the
    reference camera's elevation, elevations negated; constant: the stored vector for every view.
    """
    rule, n = conventions.view_embedding, len(targets)
    if rule == "relative":
        return geometry.view_embedding(targets, reference, el_sign, az_sign)
    if rule == "constant":
        return torch.tensor([conventions.view_embedding_constant] * n, dtype=torch.float32)
    if n != len(conventions.azimuths_deg):
        raise ValueError(f"this model's view embedding is defined for its {len(conventions.azimuths_deg)} views, got {n}")
    el_in = float(geometry.azimuth_elevation([reference])[0, 1])
    az = np.radians(np.asarray(conventions.azimuths_deg))
    az = (az + math.pi) % (2 * math.pi) - math.pi
    d_e = -np.radians(np.asarray(conventions.elevations_deg)) + el_in
    d_a = az - az[0]
    emb = np.stack([d_e, np.sin(d_a), np.cos(d_a), np.zeros_like(d_a)], 1)
    return torch.tensor(emb, dtype=torch.float32)
