"""Accuracy harness: known textured meshes → RGBA views → reconstruction → error figures.

Figures: chamfer distance (mean of both directions, point-to-surface, % of the ground
truth's bounding-box diagonal), normal consistency (mean |n·n'| between nearest surface samples, both ways), and
PSNR of the trained field's volume renders on held-out views (composited on white; ``psnr``
over the whole image, ``psnr_fg`` over pixels that either image covers).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree

from .api import Fitted, ReconConfig, extract_mesh, fit
from .cameras import Camera, orbit_camera, to_transforms
from .dataset import load_transforms
from .neus import render_image
from .raster import interpolate, rasterize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TexturedMesh:
    """vertices [V, 3] world (metres, Z up); faces [F, 3]; colours [V, 3] in [0, 1]."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray


def _pattern(v: np.ndarray, scale: float) -> np.ndarray:
    """A smooth procedural base colour (bands and blotches), [V, 3] in [0.1, 0.9]."""
    p = v / scale
    r = 0.5 + 0.35 * np.sin(3.0 * p[:, 0] + 1.0) * np.cos(2.0 * p[:, 2])
    g = 0.5 + 0.35 * np.sin(2.5 * p[:, 1] - 0.5 * p[:, 2])
    b = 0.5 + 0.35 * np.cos(4.0 * p[:, 2] + p[:, 0])
    return np.clip(np.stack([r, g, b], -1), 0.1, 0.9)


def blob(radius: float = 0.1, subdivisions: int = 5) -> TexturedMesh:
    """A lumpy textured sphere, about head-sized."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    d = s.vertices
    bump = 1 + 0.12 * np.sin(3 * d[:, 0]) * np.cos(2 * d[:, 1]) + 0.08 * np.sin(4 * d[:, 2] + 1)
    v = d * radius * bump[:, None] * np.array([0.85, 1.0, 1.1])
    return TexturedMesh(v, np.asarray(s.faces, np.int64), _pattern(v, radius / 4))


def torus(major: float = 0.07, minor: float = 0.03) -> TexturedMesh:
    """A textured torus tilted 30° (a genus-1 shape: the sphere init cannot just shrink onto it)."""
    import trimesh

    t = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=96, minor_sections=48)
    rot = trimesh.transformations.rotation_matrix(np.radians(30), [1, 0, 0])[:3, :3]
    v = np.asarray(t.vertices) @ rot.T
    return TexturedMesh(v, np.asarray(t.faces, np.int64), _pattern(v, major / 3))


def load_textured(path: str | Path, scale_to: float | None = 0.1) -> TexturedMesh:
    """Any mesh file trimesh reads (e.g. a head) with its vertex colours or texture sampled at
    the vertices; glTF is mapped Y-up → Z-up. ``scale_to``: radius of the bounding sphere
    after centring (None: keep the file's units)."""
    import trimesh

    path = Path(path)
    m = trimesh.load(path, force="mesh")
    v = np.asarray(m.vertices, np.float64)
    if path.suffix.lower() in (".glb", ".gltf"):
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], -1)
    v = v - (v.min(0) + v.max(0)) / 2
    if scale_to is not None:
        v *= scale_to / np.linalg.norm(v, axis=1).max()
    visual = m.visual.to_color() if hasattr(m.visual, "to_color") else m.visual  # texture → colours
    colours = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255
    return TexturedMesh(v, np.asarray(m.faces, np.int64), colours)


def smoothed_prior(mesh: TexturedMesh, iterations: int = 10, inflate: float = 1.02) -> tuple[np.ndarray, np.ndarray]:
    """An approximate prior like a fitted template: Laplacian-smoothed and slightly inflated."""
    import trimesh

    m = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces, process=False)
    trimesh.smoothing.filter_laplacian(m, iterations=iterations)
    centre = m.vertices.mean(0)
    return (np.asarray(m.vertices) - centre) * inflate + centre, mesh.faces


def cameras(n: int, size: int, radius: float = 0.4, fov: float = 40.0, offset: float = 0.0) -> list[Camera]:
    """n orbit cameras around the origin, elevations alternating −20°, 10°, 30°."""
    els = (-20.0, 10.0, 30.0)
    return [orbit_camera(360.0 * i / n + offset, els[i % 3], radius, fov, size) for i in range(n)]


def render_rgba(mesh: TexturedMesh, camera: Camera, supersample: int = 2) -> np.ndarray:
    """Antialiased unlit render (vertex colours) via recon.raster: uint8 [h, w, 4]."""
    big = camera.resized(camera.w * supersample, camera.h * supersample)
    frags = rasterize(mesh.vertices, mesh.faces, big)
    rgb = interpolate(mesh.colours.astype(np.float32), frags)
    cover = (frags.face_id >= 0).astype(np.float32)
    rgb = rgb * cover[..., None]
    k = supersample
    rgb = rgb.reshape(camera.h, k, camera.w, k, 3).sum((1, 3))
    alpha = cover.reshape(camera.h, k, camera.w, k).mean((1, 3))
    straight = rgb / np.maximum(alpha * k * k, 1e-8)[..., None]
    return (np.dstack([np.clip(straight, 0, 1), alpha]) * 255 + 0.5).astype(np.uint8)


def write_dataset(mesh: TexturedMesh, cams: list[Camera], out_dir: Path) -> Path:
    """Render ``cams`` and write views/*.png + transforms.json (the engine's format)."""
    (out_dir / "views").mkdir(parents=True, exist_ok=True)
    names = []
    for i, cam in enumerate(cams):
        name = f"views/view_{i:03d}.png"
        Image.fromarray(render_rgba(mesh, cam), "RGBA").save(out_dir / name)
        names.append(name)
    path = out_dir / "transforms.json"
    path.write_text(json.dumps(to_transforms(cams, names)))
    return path


def _surface_samples(v: np.ndarray, f: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    tri = v[f]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(nrm, axis=1)
    rng = np.random.default_rng(seed)
    fid = rng.choice(len(f), n, p=area / area.sum())
    s, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    return np.einsum("nk,nkd->nd", bary, tri[fid]), nrm[fid] / np.maximum(area[fid, None], 1e-20)


def _to_surface(query: np.ndarray, target: tuple[np.ndarray, np.ndarray], n_target: int, seed: int):
    """Distance from points to a mesh surface: nearest of ``n_target`` dense surface samples,
    refined to the distance to that sample's face plane (exact for planar patches, so the
    figure is not dominated by the sample spacing). Returns (distance [n], normal [n, 3])."""
    pts, nrm = _surface_samples(*target, n_target, seed)
    d, i = cKDTree(pts).query(query, workers=-1)
    plane = np.abs(((query - pts[i]) * nrm[i]).sum(1))
    return np.minimum(d, plane), nrm[i]


def surface_metrics(pred: tuple[np.ndarray, np.ndarray], gt: tuple[np.ndarray, np.ndarray],
                    n: int = 30_000, n_dense: int = 300_000) -> dict:
    """Chamfer (mean of both directions, % of gt bbox diagonal) and normal consistency."""
    p, pn = _surface_samples(*pred, n, 1)
    g, gn = _surface_samples(*gt, n, 2)
    d_pg, n_pg = _to_surface(p, gt, n_dense, 3)
    d_gp, n_gp = _to_surface(g, pred, n_dense, 4)
    diag = float(np.linalg.norm(np.ptp(gt[0], axis=0)))
    nc = 0.5 * (np.abs((pn * n_pg).sum(1)).mean() + np.abs((gn * n_gp).sum(1)).mean())
    return {"chamfer_pct": float((d_pg.mean() + d_gp.mean()) / 2 / diag * 100), "normal_consistency": float(nc)}


def psnr_views(fitted: Fitted, mesh: TexturedMesh, cams: list[Camera]) -> dict:
    """PSNR of the field's renders against ground-truth renders, composited on white."""
    white = torch.ones(3)
    full, fg = [], []
    for cam in cams:
        gt = render_rgba(mesh, cam).astype(np.float32) / 255
        gt_rgb = gt[..., :3] * gt[..., 3:] + (1 - gt[..., 3:])
        o, d = cam.rays()
        o_t = torch.from_numpy(fitted.box.to_unit(o.reshape(-1, 3))).float()
        d_t = torch.from_numpy(d.reshape(-1, 3).copy()).float()
        rgb, opa = render_image(fitted.field, fitted.estimator, fitted.ops, o_t, d_t, fitted.stats["step"], white)
        pred = rgb.numpy().reshape(cam.h, cam.w, 3)
        err = (pred - gt_rgb) ** 2
        cover = (gt[..., 3] > 0) | (opa.numpy().reshape(cam.h, cam.w) > 0.5)
        full.append(err.mean())
        fg.append(err[cover].mean())
    return {"psnr": float(-10 * np.log10(np.mean(full))), "psnr_fg": float(-10 * np.log10(np.mean(fg)))}


def psnr_textured(vertices, faces, uvs, texture, mesh: TexturedMesh, cams: list[Camera]) -> float:
    """PSNR of the exported textured mesh's unlit renders (on white) against ground truth."""
    from .texture import render_textured

    errs = []
    for cam in cams:
        gt = render_rgba(mesh, cam).astype(np.float32) / 255
        gt_rgb = gt[..., :3] * gt[..., 3:] + (1 - gt[..., 3:])
        colour, covered = render_textured(vertices, faces, uvs, faces, texture, cam)
        pred = np.where(covered[..., None], colour[..., :3], 1.0)
        errs.append(((pred - gt_rgb) ** 2).mean())
    return float(-10 * np.log10(np.mean(errs)))


def run(mesh: TexturedMesh, work_dir: Path, config: ReconConfig, n_views: int = 16, size: int = 256,
        prior: bool = True, n_heldout: int = 4, texture: bool = False) -> dict:
    """Render, reconstruct, and measure. Returns the figures and timings.

    ``seconds`` covers loading, fitting and the cleaned mesh; with ``texture`` the bake and
    GLB/OBJ export into ``work_dir / "out"`` are timed apart (``texture_seconds``).
    """
    from . import mesh as meshing

    train_cams = cameras(n_views, size)
    held = cameras(n_heldout, size, offset=360.0 / n_views / 2 + 7.0)
    path = write_dataset(mesh, train_cams, work_dir)
    t0 = time.perf_counter()
    views = load_transforms(path)
    fitted = fit(views, config, smoothed_prior(mesh) if prior else None)
    t_fit = time.perf_counter() - t0
    v, f = extract_mesh(fitted, config)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "fit_seconds": t_fit, "faces": len(f), **fitted.stats}
    if texture:
        t1 = time.perf_counter()
        bake = [(img, cam, m > 0.5) for img, cam, m in zip(views.images, views.cameras, views.masks)]
        v2, f2, uvs, tex, cover, _ = meshing.bake_texture(v, f, bake, config.texture_size, fitted.colour_world,
                                                          config.uv_layout, config.unwrap_faces)
        meshing.export(work_dir / "out", "mesh", v2, f2, uvs, tex, cover)
        out["texture_seconds"] = time.perf_counter() - t1
        out["psnr_textured"] = psnr_textured(v2, f2, uvs, tex, mesh, held)
    out.update(surface_metrics((v, f), (mesh.vertices, mesh.faces)))
    out.update(psnr_views(fitted, mesh, held))
    return out
