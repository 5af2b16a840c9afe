"""Shaded RGBA renders of a mesh with per-vertex or UV colours under a lighting set-up.

Used by ``dataset build`` (textured meshes → 48 posed views) and by the synthetic head set.
Rasterised by the project's own rasteriser (``recon.raster``); silhouettes anti-aliased by
sub-pixel coverage as in the projection backend (``engine/multiview/_shade.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.cameras import Camera
from recon.raster import coverage, edge_pixels, interpolate, rasterize, vertex_normals
from recon.texture import render_textured


@dataclass(frozen=True)
class Lighting:
    """Ambient + directional lights in the world (Blender axes), colours linear in [0, 1]."""

    ambient: float = 0.55
    """Uniform light on every surface."""
    directions: tuple[tuple[float, float, float], ...] = ((0.0, -1.0, 0.4),)
    """Unit-less directions *toward* each light (normalised on use); empty: a headlight from the camera."""
    intensities: tuple[float, ...] = (0.45,)
    """Strength of each directional light."""
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of every light (white balance of the set-up)."""


#: The set-ups the synthetic set draws from: studio front key, side key, top light, headlight.
LIGHTINGS = {
    "studio": Lighting(0.5, ((0.3, -1.0, 0.5), (-0.6, -0.4, 0.2)), (0.4, 0.15)),
    "side": Lighting(0.4, ((1.0, -0.3, 0.2),), (0.6,), (1.0, 0.96, 0.9)),
    "top": Lighting(0.45, ((0.0, -0.2, 1.0),), (0.55,), (0.95, 0.97, 1.0)),
    "headlight": Lighting(0.6, (), (0.4,)),
}


def _shade(normals: np.ndarray, camera: Camera, light: Lighting) -> np.ndarray:
    """[h, w, 3] irradiance for unit normals [h, w, 3]."""
    dirs = light.directions or (tuple(camera.c2w[:3, :3] @ np.array([0.0, 0.35, 1.0])),)
    out = np.full(normals.shape[:2], light.ambient, np.float32)
    for d, k in zip(dirs, light.intensities):
        d = np.asarray(d, np.float32) / np.linalg.norm(d)
        out += k * np.clip(normals @ d, 0.0, 1.0)
    return out[..., None] * np.asarray(light.tint, np.float32)


def render(vertices: np.ndarray, faces: np.ndarray, camera: Camera, *, colours: np.ndarray | None = None,
           uvs: np.ndarray | None = None, faces_uv: np.ndarray | None = None, texture: np.ndarray | None = None,
           lighting: Lighting = Lighting(), ss: int = 3) -> np.ndarray:
    """One view as straight-alpha RGBA uint8 [h, w, 4].

    vertices: [V, 3]; faces: [F, 3]; colours: [V, 3] in [0, 1] (per-vertex albedo) or
    uvs [V', 2] + faces_uv [F, 3] + texture [S, S, 3]; ss: coverage samples per pixel side.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    frags = rasterize(v, f, camera)
    if texture is not None:
        albedo, covered = render_textured(v, f, uvs, faces_uv, texture, camera, frags)
        albedo = albedo[..., :3]
    else:
        albedo = interpolate(np.asarray(colours, np.float32), frags)
        covered = frags.mask
    n = interpolate(vertex_normals(v, f), frags)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    rgb = np.clip(albedo * _shade(n, camera, lighting), 0, 1) * covered[..., None]
    alpha = covered.astype(np.float32)
    if ss > 1:
        edge = edge_pixels(covered)
        if edge.any():
            uv, _ = camera.project(v)
            alpha[edge] = coverage(uv, f, np.argwhere(edge), camera.h, camera.w, ss)
    out = np.concatenate([rgb, alpha[..., None]], -1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
