"""A small vectorised CPU triangle rasteriser (numpy).

pytorch3d has no Linux wheel (docs/architecture.md, "Dependencies"), and the stages that need a
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
    flat = depth is None
    z = np.ones(len(xy)) if flat else np.asarray(depth, dtype=np.float64)
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
        _raster_chunk(idx[start:stop], tri, None if flat else tz, area, x0, y0, bw, bh, w, perspective,
                      best_key, face_id, bary, zbuf)
        start = stop
    return face_id.reshape(h, w), bary.reshape(h, w, 3), zbuf.reshape(h, w)


def _raster_chunk(sel, tri, tz, area, x0, y0, bw, bh, w, perspective, best_key, face_id, bary, zbuf) -> None:
    """Rasterise the faces ``sel`` into the flat buffers (in place), keeping the nearest."""
    n = bw[sel] * bh[sel]
    fid = np.repeat(np.arange(len(sel)), n)  # local face index
    offs = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    bws = bw[sel][fid]
    qy = offs // bws
    qx = offs - qy * bws
    # Edge functions (signed sub-areas / area) are affine in the pixel position: l_i = a·x + b·y + c
    # with x, y relative to the face's box corner (small numbers: no cancellation).
    t = tri[sel] - np.stack([x0[sel], y0[sel]], -1)[:, None, :] - 0.5  # [S, 3, 2], pixel-centre origin
    inv = 1.0 / area[sel]
    coef = []
    for i, j in ((1, 2), (2, 0)):  # l0 from corners 1, 2; l1 from corners 2, 0
        a = (t[:, i, 1] - t[:, j, 1]) * inv
        b = (t[:, j, 0] - t[:, i, 0]) * inv
        c = (t[:, i, 0] * t[:, j, 1] - t[:, j, 0] * t[:, i, 1]) * inv
        coef.append((a[fid], b[fid], c[fid]))
    l0 = coef[0][0] * qx + coef[0][1] * qy + coef[0][2]
    l1 = coef[1][0] * qx + coef[1][1] * qy + coef[1][2]
    l2 = 1.0 - l0 - l1
    eps = -1e-7
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    fid = sel[fid[inside]]
    px = x0[fid] + qx[inside]
    py = y0[fid] + qy[inside]
    lam = np.stack([l0[inside], l1[inside], l2[inside]], -1).clip(0, None)
    lam /= lam.sum(-1, keepdims=True)
    pix = py * w + px
    if tz is None:  # flat (UV charts): no z-test, ties on shared edges go to either face
        face_id[pix] = fid
        bary[pix] = lam
        zbuf[pix] = 1.0
        return
    invz = 1.0 / tz[fid]  # [N, 3]
    s = (lam * invz).sum(-1)
    d = (1.0 / s).astype(np.float32)
    b = lam * invz / s[:, None] if perspective else lam
    # Positive float32 bit patterns order like the floats: the z-test is one int64 sort, and
    # only pixels drawn more than once in this chunk need it.
    dkey = d.view(np.int32).astype(np.int64)
    multi = np.bincount(pix, minlength=len(face_id))[pix] > 1
    single = np.nonzero(~multi)[0]
    rest = np.nonzero(multi)[0]
    key = (pix[rest] << 32) | dkey[rest]
    order = rest[np.argsort(key, kind="stable")]
    ks = pix[order]
    first = np.ones(len(ks), dtype=bool)
    first[1:] = ks[1:] != ks[:-1]
    win = np.concatenate([single, order[first]])
    wp = pix[win]
    better = dkey[win] < best_key[wp]
    win, wp = win[better], wp[better]
    best_key[wp] = dkey[win]
    face_id[wp] = fid[win]
    bary[wp] = b[win]
    zbuf[wp] = d[win]


def front_facing(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """bool [F]: faces whose right-hand normal points toward the camera centre."""
    v, f = _check_mesh(vertices, faces)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return np.einsum("fk,fk->f", n, camera.center - v[f[:, 0]]) > 0


def rasterize(vertices: np.ndarray, faces: np.ndarray, camera: Camera, *, cull_back: bool = False) -> Fragments:
    """Rasterise a mesh seen by ``camera`` at its own ``w`` × ``h``.

    vertices: [V, 3] world (Blender, Z up); faces: [F, 3] int (either winding without culling).
    cull_back: skip faces turned away from the camera (``front_facing``). Exact for closed
        meshes wound counter-clockwise seen from outside, and about twice as fast.
    Returns the nearest face per pixel centre (see ``Fragments``; face ids index ``faces``).
    """
    v, f = _check_mesh(vertices, faces)
    uv, depth = camera.project(v)
    if not cull_back:
        face_id, bary, zbuf = rasterize_screen(uv, depth, f, int(camera.h), int(camera.w))
        return Fragments(face_id, bary, zbuf, f)
    keep = np.nonzero(front_facing(v, f, camera))[0]
    face_id, bary, zbuf = rasterize_screen(uv, depth, f[keep], int(camera.h), int(camera.w))
    face_id = np.where(face_id >= 0, keep[np.maximum(face_id, 0)], -1)
    return Fragments(face_id, bary, zbuf, f)


def edge_pixels(mask: np.ndarray) -> np.ndarray:
    """bool [h, w]: pixels whose 3 × 3 neighbourhood holds both covered and empty pixel centres."""
    m = np.pad(np.asarray(mask, bool), 1, mode="edge")
    h, w = mask.shape
    any_in = np.zeros((h, w), bool)
    all_in = np.ones((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            win = m[dy : dy + h, dx : dx + w]
            any_in |= win
            all_in &= win
    return any_in & ~all_in


def coverage(xy: np.ndarray, faces: np.ndarray, pixels: np.ndarray, h: int, w: int, n: int = 4) -> np.ndarray:
    """Fraction of each listed pixel covered by the union of the triangles (anti-aliased alpha).

    ``n`` × ``n`` sample points per pixel (regular grid): a pixel's coverage is the share
    of them inside any triangle (no depth: the union is the silhouette). Only faces whose
    pixel bounding box holds a listed pixel are tested, so asking for the edge pixels of
    a 1× raster costs a small fraction of rendering at n× resolution.
    xy: [V, 2] continuous pixel coordinates; faces: [F, 3]; pixels: int [P, 2] (row, col).
    Returns float32 [P] in [0, 1].
    """
    xy = np.asarray(xy, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    if n * n > 62:
        raise ValueError("coverage: at most 7 × 7 samples per pixel")
    slot = np.full(h * w, -1, np.int64)
    slot[pixels[:, 0] * w + pixels[:, 1]] = np.arange(len(pixels))
    tri = xy[faces]  # [F, 3, 2]
    x0 = np.clip(np.floor(tri[..., 0].min(1)), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(tri[..., 0].max(1)), -1, w - 1).astype(np.int64)
    y0 = np.clip(np.floor(tri[..., 1].min(1)), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(tri[..., 1].max(1)), -1, h - 1).astype(np.int64)
    # Integral image of the listed pixels: keep faces whose box holds one (O(F) test).
    listed = np.zeros((h + 1, w + 1), np.int64)
    listed[pixels[:, 0] + 1, pixels[:, 1] + 1] = 1
    sat = listed.cumsum(0).cumsum(1)
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (
        tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1])
    ok = (x1 >= x0) & (y1 >= y0) & np.all(np.isfinite(tri), axis=(1, 2)) & (np.abs(area) > 1e-12)
    x0c, x1c, y0c, y1c = (np.clip(a, 0, lim) for a, lim in ((x0, w), (x1 + 1, w), (y0, h), (y1 + 1, h)))
    hits = sat[y1c, x1c] - sat[y0c, x1c] - sat[y1c, x0c] + sat[y0c, x0c]
    sel = np.nonzero(ok & (hits > 0))[0]
    bw, bh = (x1 - x0 + 1)[sel], (y1 - y0 + 1)[sel]
    cnt = bw * bh
    fid = np.repeat(sel, cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    px = np.repeat(x0[sel], cnt) + offs % np.repeat(bw, cnt)
    py = np.repeat(y0[sel], cnt) + offs // np.repeat(bw, cnt)
    idx = slot[py * w + px]
    keep = idx >= 0
    fid, px, py, idx = fid[keep], px[keep], py[keep], idx[keep]
    t = tri[fid]  # [N, 3, 2]
    # Edge functions, oriented so that inside is positive for either winding.
    sign = np.sign(area[fid])
    bits = np.zeros(len(fid), np.int64)
    offsets = (np.arange(n) + 0.5) / n
    k = 0
    for oy in offsets:
        for ox in offsets:
            sx, sy = px + ox, py + oy
            inside = np.ones(len(fid), bool)
            for a, b in ((0, 1), (1, 2), (2, 0)):
                e = (t[:, b, 0] - t[:, a, 0]) * (sy - t[:, a, 1]) - (t[:, b, 1] - t[:, a, 1]) * (sx - t[:, a, 0])
                inside &= e * sign >= 0
            bits |= inside.astype(np.int64) << k
            k += 1
    acc = np.zeros(len(pixels), np.int64)
    np.bitwise_or.at(acc, idx, bits)
    counts = np.zeros(len(pixels), np.int64)
    for j in range(n * n):
        counts += (acc >> j) & 1
    return (counts / (n * n)).astype(np.float32)


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
