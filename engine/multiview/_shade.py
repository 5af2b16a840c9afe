"""Shaded RGBA renders of a textured mesh (the projection backend's views).

Lambert with a soft ambient and a headlight slightly above the camera: the shading only
hints at shape, so the albedo (the photo's colours) stays readable for the recon stage.
Supersampling by ``ss`` in each direction gives anti-aliased alpha (coverage) at the edges.
"""
from __future__ import annotations

import numpy as np

from recon.cameras import Camera
from recon.raster import interpolate, rasterize
from recon.texture import render_textured


def render_rgba(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    normals: np.ndarray,
    texture: np.ndarray,
    camera: Camera,
    *,
    ambient: float = 0.6,
    ss: int = 2,
) -> np.ndarray:
    """One view, straight-alpha RGBA uint8 [h, w, 4].

    vertices: [V, 3]; faces: [F, 3] (also the UV faces); uvs: [V, 2]; normals: [V, 3] unit;
    texture: float [S, S, 3] in [0, 1] or uint8; camera: the output camera (h × w).
    """
    big = camera.resized(camera.w * ss, camera.h * ss)
    frags = rasterize(vertices, faces, big)
    colour, covered = render_textured(vertices, faces, uvs, faces, texture, big, frags)
    n = interpolate(normals, frags)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    # Headlight from the camera, raised a little so the chin and brows read as shape.
    rot = big.c2w[:3, :3]
    light = rot @ np.array([0.0, 0.35, 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(n @ light, 0.0, 1.0)
    rgb = colour[..., :3] * (ambient + (1.0 - ambient) * lambert)[..., None] * covered[..., None]
    cov = covered.astype(np.float32)
    h, w = camera.h, camera.w
    rgb = rgb.reshape(h, ss, w, ss, 3).sum(axis=(1, 3))
    cov = cov.reshape(h, ss, w, ss).sum(axis=(1, 3))
    out = np.zeros((h, w, 4), np.float32)
    nz = cov > 0
    out[nz, :3] = rgb[nz] / cov[nz, None]  # straight (un-premultiplied) colour
    out[..., 3] = cov / (ss * ss)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
