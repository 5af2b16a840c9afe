"""From the SDF to a textured mesh: marching cubes → clean → decimate → weld → UV → bake → export.

Gen3D-Face's last step (paper §3.3): the NeuS surface is extracted with marching cubes
and textured from the generated views. Marching cubes evaluates the SDF only in a narrow
band found on a coarse grid first (a dense 256³ evaluation of a pure-torch field would
dominate the CPU budget). Texels that no view sees take the colour field's value.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Callable

import fast_simplification
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import marching_cubes

from .errors import ReconError
from .sampling import SceneBox

log = logging.getLogger(__name__)


def _eval_grid(sdf_fn: Callable, pts: np.ndarray, device, chunk: int = 131072) -> np.ndarray:
    out = []
    with torch.no_grad():
        for c in np.array_split(pts, max(1, len(pts) // chunk)):
            out.append(sdf_fn(torch.from_numpy(c).float().to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def sdf_volume(sdf_fn: Callable, resolution: int, device="cpu", coarse: int = 64) -> np.ndarray:
    """SDF on a resolution³ grid of corners spanning [-1, 1]³, float32 [R, R, R] ([ix, iy, iz]).

    Exact values within a band around the zero level found on a ``coarse`` grid; elsewhere
    the coarse grid's trilinear upsampling (right sign, which is all marching cubes needs).
    sdf_fn: (x [n, 3] normalised torch) → [n].
    """
    axis = np.linspace(-1, 1, coarse, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    low = _eval_grid(sdf_fn, grid, device).reshape(coarse, coarse, coarse)
    if resolution <= coarse:
        return low if resolution == coarse else _resample(low, resolution)
    vol = _resample(low, resolution)
    # a coarse cell that holds surface has corners within one cell diagonal of it; dilating
    # by a cell more covers an SDF whose gradient norm strays from 1
    band_cells = np.abs(low) < (2 / (coarse - 1)) * np.sqrt(3)
    band = _resample(ndimage.binary_dilation(band_cells, iterations=1).astype(np.float32), resolution) > 0
    idx = np.argwhere(band)
    pts = (idx / (resolution - 1) * 2 - 1).astype(np.float32)
    vol[band] = _eval_grid(sdf_fn, pts, device)
    log.info("marching-cubes volume %d³: %d points evaluated exactly (%.1f%%)", resolution, len(pts),
             100 * len(pts) / resolution**3)
    return vol


def _resample(vol: np.ndarray, res: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(res, res, res), mode="trilinear", align_corners=True)[0, 0].numpy()


def marching_cubes_mesh(vol: np.ndarray, box: SceneBox) -> tuple[np.ndarray, np.ndarray]:
    """Zero level of ``vol`` (corners spanning the box) → (vertices [V, 3] world, faces [F, 3]),
    faces wound counter-clockwise seen from outside (SDF > 0)."""
    if not (vol.min() < 0 < vol.max()):
        raise ReconError("the reconstructed SDF has no zero crossing (no surface)")
    res = vol.shape[0]
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=(2 / (res - 1),) * 3)
    verts = verts - 1.0
    faces = faces.astype(np.int64)
    if _signed_volume(verts, faces) < 0:  # orient outward whatever skimage's convention
        faces = faces[:, ::-1].copy()
    return box.to_world(verts), faces


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def keep_largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop every connected piece but the one with the most faces (floaters)."""
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    keep = face_label == np.bincount(face_label).argmax()
    return _compact(vertices, faces[keep])


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Closed loops of boundary edges (edges used by one face), each as a vertex list in the
    order that matches the faces' winding."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, 1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inv.reshape(-1)] == 1]
    nxt = defaultdict(list)
    for a, b in boundary:
        nxt[int(b)].append(int(a))  # reversed: the hole's own winding
    loops, seen = [], set()
    for start in list(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and nxt.get(v):
            seen.add(v)
            loop.append(v)
            v = nxt[v][0]
        if len(loop) >= 3 and v == start:
            loops.append(loop)
    return loops


def close_small_holes(vertices: np.ndarray, faces: np.ndarray, max_edges: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Fill every boundary loop of at most ``max_edges`` edges with a fan around its centroid."""
    new_v, new_f = [vertices], [faces]
    n = len(vertices)
    filled = 0
    for loop in boundary_loops(faces):
        if len(loop) > max_edges:
            continue
        centre = vertices[loop].mean(0)
        new_v.append(centre[None])
        ring = np.array(loop)
        new_f.append(np.stack([ring, np.roll(ring, -1), np.full(len(ring), n)], 1))
        n += 1
        filled += 1
    if filled:
        log.info("closed %d small holes", filled)
    return np.concatenate(new_v), np.concatenate(new_f)


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation (fast-simplification) to about ``target_faces`` faces."""
    if len(faces) <= target_faces:
        return vertices, faces
    reduction = 1.0 - target_faces / len(faces)
    v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int64), reduction)
    return _compact(v.astype(np.float64), f.astype(np.int64))


def weld(vertices: np.ndarray, faces: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tol`` (metres), then drop the faces that collapse
    (repeated corners) and the pairs of faces left on the same three vertices (fins).

    Marching cubes puts two or three vertices within a hair of a grid corner the surface
    passes through; such slivers survive decimation and become zero-area faces (and, in a
    file written with fixed decimals, non-manifold edges) in the exported asset.
    vertices: [V, 3]; faces: [F, 3]. Returns (vertices [V', 3], faces [F', 3]).
    """
    from scipy.spatial import cKDTree

    pairs = cKDTree(vertices).query_pairs(tol, output_type="ndarray")
    if len(pairs) == 0:
        return vertices, faces
    n = len(vertices)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels)
    merged = np.zeros((len(counts), 3))
    np.add.at(merged, labels, vertices)
    merged /= counts[:, None]
    f = labels[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    _, inv, dup = np.unique(np.sort(f, 1), axis=0, return_inverse=True, return_counts=True)
    f = f[dup[inv.reshape(-1)] == 1]
    log.info("welded %d vertex pairs closer than %.1e m", len(pairs), tol)
    return _compact(merged, f)


def topology_report(vertices: np.ndarray, faces: np.ndarray, area_tol: float = 1e-12) -> dict:
    """What makes a mesh a clean asset: watertight, 2-manifold, one piece, no degenerate faces.

    vertices: [V, 3]; faces: [F, 3] (vertices already merged: one per position).
    area_tol: faces with area ≤ area_tol · (bounding-box diagonal)² count as zero-area.
    Returns {boundary_edges, nonmanifold_edges, components, zero_area_faces} (all 0/1 for a clean mesh).
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    n = len(v)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    used = np.unique(f)
    _, labels = connected_components(graph, directed=False)
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    diag2 = float(np.sum(np.ptp(v, axis=0) ** 2)) if len(v) else 0.0
    return {"boundary_edges": int((counts == 1).sum()), "nonmanifold_edges": int((counts > 2).sum()),
            "components": int(len(np.unique(labels[used]))), "zero_area_faces": int((area <= area_tol * diag2).sum())}


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, target_faces: int,
               max_hole_edges: int = 64, weld_tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Largest component → small holes closed → decimated → near-coincident vertices welded.

    weld_tol: relative to the bounding-box diagonal (1e-6 of a 30 cm head is 0.3 µm; float32,
        as GLB stores positions, still tells such vertices apart).
    """
    v, f = keep_largest_component(vertices, faces)
    v, f = close_small_holes(v, f, max_hole_edges)
    v, f = decimate(v, f, target_faces)
    v, f = weld(v, f, weld_tol * float(np.linalg.norm(np.ptp(v, axis=0))))
    return keep_largest_component(v, f)


def uv_layout(vertices, faces, size: int, layout: str = "xatlas", unwrap_faces: int = 5000, template=None):
    """(vmap [V'], faces_uv [F, 3], uvs [V', 2]) of the mesh, as ``recon.uv.unwrap`` returns them.

    layout: "xatlas" (charts of this surface; on a decimated copy of at most ``unwrap_faces``
        faces, transferred back, when the mesh has more: xatlas on 50k faces took 20-27 s) or
        "template" (``template`` = (vertices, faces, uvs, faces_uv) of the prior with its fixed
        layout, transferred by closest point).
    """
    from .uv import unwrap
    from .uv_transfer import proxy_unwrap, transfer_uvs

    if layout == "template":
        if template is None:
            raise ValueError("uv layout 'template' needs a prior mesh with UVs")
        return transfer_uvs(*template, vertices, faces)
    if layout != "xatlas":
        raise ValueError(f"unknown uv layout {layout!r} (xatlas, template)")
    if unwrap_faces and len(faces) > unwrap_faces:
        return proxy_unwrap(vertices, faces, unwrap_faces, resolution=size)
    return unwrap(vertices, faces, resolution=size)


def bake_texture(vertices, faces, views, size: int, colour_fn: Callable[[np.ndarray], np.ndarray] | None,
                 layout: str = "xatlas", unwrap_faces: int = 5000, template=None, bake_config=None):
    """UV layout (``uv_layout``) and a base-colour texture baked from the views (``recon.bake``);
    texels no view saw take ``colour_fn(points_world [n, 3]) -> rgb [n, 3]``.

    views: (image, camera, mask) per view. bake_config: a ``recon.bake.BakeConfig`` (its size is
    replaced by ``size``). Returns (vertices' [V', 3], faces' [F, 3], uvs [V', 2],
    texture uint8 [S, S, 3], coverage uint8 [S, S]: 255 where a view saw the texel,
    stats {texture_coverage, texture_autofilled, bake_seconds}).
    """
    from dataclasses import replace

    from .bake import BakeConfig, bake

    vmap, faces_uv, uvs = uv_layout(vertices, faces, size, layout, unwrap_faces, template)
    v_new = vertices[vmap]
    config = replace(bake_config or BakeConfig(), size=size)
    # recon's surface is closed and wound outward: back faces can be culled in the depth maps
    result = bake(v_new, faces_uv, uvs, faces_uv, views, config, fill=colour_fn, cull_back=True)
    log.info("texture %d²: %.1f%% of the atlas seen, %.1f%% from the colour field (bake %.1f s)", size,
             100 * result.coverage, 100 * result.autofilled, result.seconds["total"])
    texture = (np.clip(result.texture, 0, 1) * 255 + 0.5).astype(np.uint8)
    stats = {"texture_coverage": result.coverage, "texture_autofilled": result.autofilled,
             "bake_seconds": result.seconds["total"]}
    return v_new, faces_uv, uvs, texture, (result.seen * 255).astype(np.uint8), stats


def export(out_dir: Path, name: str, vertices, faces, uvs, texture, coverage=None) -> tuple[Path, Path]:
    """GLB and OBJ/MTL/PNG (recon.export: Blender world in, metallic 0), and the coverage mask
    ``<name>_coverage.png`` (uint8 [S, S], 255 where a view saw the texel) when given."""
    from .export import write_glb, write_obj, write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    if coverage is not None:
        write_png(out_dir / f"{name}_coverage.png", coverage)
    glb = write_glb(out_dir / f"{name}.glb", vertices, faces, uvs, texture)
    obj = write_obj(out_dir / f"{name}.obj", vertices, faces, uvs, texture)
    return Path(glb), Path(obj)
