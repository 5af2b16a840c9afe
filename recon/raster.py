"""A small vectorised CPU triangle rasteriser (numpy).

pytorch3d has no Linux wheel (DESIGN.md, "Dependencies"), and the stages that need a
z-buffer (the projection backend's visibility, texture baking, vertex visibility) only need
face ids, perspective-correct barycentrics and depth, so we rasterise ourselves:

1. project the vertices (``Camera.project``: continuous pixel coordinates, pixel centres at
   ``i + 0.5``);
2. for every face, list the pixel centres in its bounding box (``np.repeat`` over boxes,
   processed in chunks to bound memory);
3. keep the centres inside the triangle (edge functions, a tiny tolerance so shared edges
   leave no cracks) and compute their barycentrics;
4. z-buffer: one integer sort of ``pixel · 2³² + float-bits(depth)`` (positive float32 bits
   sort like the floats) and the first entry per pixel wins.

Barycentrics are interpolated in screen space and corrected for perspective with the
per-vertex 1/depth, so attributes interpolate as on the 3D triangle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import Camera

#: Candidate pixels processed at once (bounds peak memory to a few hundred MB).
_CHUNK = 1 << 22
#: Faces with a vertex closer than this (metres, camera depth) are dropped (no near clipping).
NEAR = 1e-4


@dataclass(frozen=True)
class Fragments:
    """What each pixel of one rasterised image sees.

    face_id: int64 [h, w], index into ``faces`` (−1 = empty).
    bary: float32 [h, w, 3], perspective-correct barycentrics of the face's 3 corners (0 if empty).
    depth: float32 [h, w], camera depth along −Z_cam (inf if empty).
    faces: int64 [F, 3], the faces that were rasterised (for ``interpolate``).
    """

    face_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray
    faces: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """bool [h, w], covered pixels."""
        return self.face_id >= 0


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] not in (2, 3):
        raise ValueError(f"vertices must be [V, 3], got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("faces index outside the vertex array")
    return v, f


def rasterize_screen(
    xy: np.ndarray, depth: np.ndarray | None, faces: np.ndarray, h: int, w: int, *, perspective: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise triangles given in pixel coordinates.

    xy: [V, 2] continuous pixel coordinates (x right, y down; pixel centres at i + 0.5).
    depth: [V] positive depth per vertex, or None for flat 2D (e.g. UV charts: later faces
        win ties arbitrarily, there should be no overlap).
    faces: [F, 3] int.
    perspective: correct barycentrics with 1/depth (False: screen-space barycentrics).
    Returns (face_id int64 [h, w], bary float32 [h, w, 3], depth float32 [h, w]).
    """
    xy = np.asarray(xy, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    z = np.ones(len(xy)) if depth is None else np.asarray(depth, dtype=np.float64)
    best_key = np.full(h * w, np.iinfo(np.int64).max, dtype=np.int64)
    face_id = np.full(h * w, -1, dtype=np.int64)
    bary = np.zeros((h * w, 3), dtype=np.float32)
    zbuf = np.full(h * w, np.inf, dtype=np.float32)
    if len(faces) == 0:
        return face_id.reshape(h, w), bary.reshape(h, w, 3), zbuf.reshape(h, w)

    tri = xy[faces]  # [F, 3, 2]
    tz = z[faces]  # [F, 3]
    # Bounding boxes in pixel indices whose centres may be inside.
    x0 = np.clip(np.ceil(tri[..., 0].min(1) - 0.5), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(tri[..., 0].max(1) - 0.5), -1, w - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[..., 1].min(1) - 0.5), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(tri[..., 1].max(1) - 0.5), -1, h - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    ok = (bw > 0) & (bh > 0) & np.all(tz > NEAR, axis=1) & np.all(np.isfinite(tri), axis=(1, 2))
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (
        tri[:, 2, 0] - tri[:, 0, 0]
    ) * (tri[:, 1, 1] - tri[:, 0, 1])
    ok &= np.abs(area) > 1e-12
    idx = np.nonzero(ok)[0]
    counts = (bw * bh)[idx]
    # Chunks of faces whose candidate counts sum to about _CHUNK.
    cum = np.cumsum(counts)
    start = 0
    while start < len(idx):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _CHUNK, side="right")), start + 1)
        _raster_chunk(idx[start:stop], tri, tz, area, x0, y0, bw, bh, w, perspective, best_key, face_id, bary, zbuf)
        start = stop
    return face_id.reshape(h, w), bary.reshape(h, w, 3), zbuf.reshape(h, w)


def _raster_chunk(sel, tri, tz, area, x0, y0, bw, bh, w, perspective, best_key, face_id, bary, zbuf) -> None:
    """Rasterise the faces ``sel`` into the flat buffers (in place), keeping the nearest."""
    n = bw[sel] * bh[sel]
    fid = np.repeat(sel, n)
    offs = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    bws = np.repeat(bw[sel], n)
    px = np.repeat(x0[sel], n) + offs % bws
    py = np.repeat(y0[sel], n) + offs // bws
    cx, cy = px + 0.5, py + 0.5
    t = tri[fid]  # [N, 3, 2]
    inv = 1.0 / area[fid]
    # Edge functions = signed sub-areas; l_i is the weight of corner i.
    l0 = ((t[:, 1, 0] - cx) * (t[:, 2, 1] - cy) - (t[:, 2, 0] - cx) * (t[:, 1, 1] - cy)) * inv
    l1 = ((t[:, 2, 0] - cx) * (t[:, 0, 1] - cy) - (t[:, 0, 0] - cx) * (t[:, 2, 1] - cy)) * inv
    l2 = 1.0 - l0 - l1
    eps = -1e-7
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    fid, px, py = fid[inside], px[inside], py[inside]
    lam = np.stack([l0[inside], l1[inside], l2[inside]], -1).clip(0, None)
    lam /= lam.sum(-1, keepdims=True)
    invz = 1.0 / tz[fid]  # [N, 3]
    s = (lam * invz).sum(-1)
    d = (1.0 / s).astype(np.float32)
    b = lam * invz / s[:, None] if perspective else lam
    pix = py * w + px
    # Positive float32 bit patterns order like the floats: one int64 sort is the z-test.
    key = (pix << 32) | d.view(np.int32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    ks = pix[order]
    first = np.ones(len(ks), dtype=bool)
    first[1:] = ks[1:] != ks[:-1]
    win = order[first]
    wp = pix[win]
    wkey = d[win].view(np.int32).astype(np.int64)
    better = wkey < best_key[wp]
    win, wp = win[better], wp[better]
    best_key[wp] = wkey[better]
    face_id[wp] = fid[win]
    bary[wp] = b[win]
    zbuf[wp] = d[win]


def rasterize(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> Fragments:
    """Rasterise a mesh seen by ``camera`` at its own ``w`` × ``h``.

    vertices: [V, 3] world (Blender, Z up); faces: [F, 3] int (either winding: no culling).
    Returns the nearest face per pixel centre (see ``Fragments``).
    """
    v, f = _check_mesh(vertices, faces)
    uv, depth = camera.project(v)
    face_id, bary, zbuf = rasterize_screen(uv, depth, f, int(camera.h), int(camera.w))
    return Fragments(face_id, bary, zbuf, f)


def interpolate(attr: np.ndarray, frags: Fragments) -> np.ndarray:
    """Interpolate an attribute over the covered pixels.

    attr: per vertex [V, C] (or [V]) or per face corner [F, 3, C].
    Returns [h, w, C] float32 (0 where empty).
    """
    a = np.asarray(attr, dtype=np.float32)
    fid = frags.face_id
    h, w = fid.shape
    covered = fid >= 0
    if a.ndim == 3 and a.shape[:2] == (len(frags.faces), 3):
        corners = a[fid[covered]]  # [N, 3, C]
    else:
        if a.ndim == 1:
            a = a[:, None]
        corners = a[frags.faces[fid[covered]]]  # [N, 3, C]
    out = np.zeros((h, w, corners.shape[-1]), dtype=np.float32)
    out[covered] = np.einsum("nk,nkc->nc", frags.bary[covered], corners)
    return out


def visible_vertices(
    vertices: np.ndarray, faces: np.ndarray, camera: Camera, frags: Fragments | None = None, eps: float = 1e-3
) -> np.ndarray:
    """Which vertices the camera sees (not hidden by a nearer surface): ``visible_points``
    of the vertices themselves.

    vertices: [V, 3]; faces: [F, 3]; frags: ``rasterize(vertices, faces, camera)`` (computed if None).
    Returns bool [V].
    """
    v, f = _check_mesh(vertices, faces)
    if frags is None:
        frags = rasterize(v, f, camera)
    return visible_points(v, v, camera, frags, eps)


def visible_points(
    points: np.ndarray, vertices: np.ndarray, camera: Camera, frags: Fragments, eps: float = 1e-3
) -> np.ndarray:
    """Which surface points the camera sees.

    A point is visible when it projects inside the image, in front of the camera, and the
    face drawn at its pixel, extended as a plane and cut by the point's own ray, is not
    nearer than the point by more than ``eps`` (metres). Comparing against that plane
    (not the pixel-centre depth) removes the half-pixel slope error on oblique surfaces;
    a point whose pixel is empty (on the silhouette) counts as visible.
    points: [N, 3] world; vertices: [V, 3] of the mesh ``frags`` was rasterised from.
    Returns bool [N].
    """
    p = np.asarray(points, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    uv, depth = camera.project(p)
    h, w = frags.depth.shape
    px = np.floor(uv[:, 0]).astype(np.int64)
    py = np.floor(uv[:, 1]).astype(np.int64)
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h) & (depth > NEAR)
    vis = np.zeros(len(p), dtype=bool)
    idx = np.nonzero(inside)[0]
    fid = frags.face_id[py[idx], px[idx]]
    covered = fid >= 0
    vis[idx[~covered]] = True
    idx, fid = idx[covered], fid[covered]
    tri = v[frags.faces[fid]]  # [N, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    c = camera.center
    ray = p[idx] - c
    denom = np.einsum("nk,nk->n", n, ray)
    grazing = np.abs(denom) < 1e-12 * np.linalg.norm(n, axis=1) * np.linalg.norm(ray, axis=1)
    # The ray c + t·(p − c) meets the face's plane at t; depth scales with t.
    t = np.einsum("nk,nk->n", n, tri[:, 0] - c) / np.where(grazing, 1.0, denom)
    surf = np.where(grazing, frags.depth[py[idx], px[idx]], t * depth[idx])
    vis[idx] = depth[idx] <= surf + eps
    return vis


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals (right-hand rule), [F, 3]."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, [V, 3]."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2·area
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-20)
