"""A UV layout carried from one surface onto another close to it (closest-point transfer).

Used to give the recon surface the template's fixed UV layout (the prior mesh's UVs: the
same texel is the same facial point on every head), and to unwrap a large mesh fast by
unwrapping a decimated copy with xatlas and transferring its charts.

Each target vertex takes the UV of its closest point on the source (inside one chart, UVs
are continuous, so neighbours agree). A target face whose corners land in different
charts (it straddles a seam) takes, for every corner, the affine extension of the chart
under its centroid, so no face spans two charts of the atlas; vertices are split where
their faces disagree.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def chart_labels(faces_uv: np.ndarray, n_uv: int) -> np.ndarray:
    """int64 [F]: the UV chart (faces connected through shared UV vertices) of every face."""
    f = np.asarray(faces_uv, np.int64)
    rows = np.repeat(np.arange(len(f)), 3)
    graph = coo_matrix((np.ones(len(rows)), (rows, f.ravel())), shape=(len(f), n_uv))
    adj = graph @ graph.T
    return connected_components(adj, directed=False)[1].astype(np.int64)


def _barycentric(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentrics [N, 3] of p [N, 3] projected onto the planes of tri [N, 3, 3] (unclamped)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) < 1e-30, 1e-30, d00 * d11 - d01 * d01)
    l1 = (d11 * d20 - d01 * d21) / den
    l2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - l1 - l2, l1, l2], -1)


def closest_faces(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Approximate closest point on a mesh: among the ``k`` faces with the nearest centroids,
    the one whose clamped projection is nearest.

    points: [N, 3]; vertices: [V, 3]; faces: [F, 3]. Returns (face int64 [N], bary [N, 3] clamped).
    """
    tri = vertices[faces]  # [F, 3, 3]
    k = min(k, len(faces))
    _, cand = cKDTree(tri.mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    best = np.full(len(points), np.inf)
    face = np.zeros(len(points), np.int64)
    bary = np.zeros((len(points), 3))
    for j in range(k):
        t = tri[cand[:, j]]
        b = np.clip(_barycentric(points, t), 0, None)
        b /= np.maximum(b.sum(1, keepdims=True), 1e-12)
        d = np.linalg.norm(np.einsum("nk,nkc->nc", b, t) - points, axis=1)
        better = d < best
        best[better], face[better], bary[better] = d[better], cand[better, j], b[better]
    return face, bary


def transfer_uvs(src_vertices, src_faces, src_uvs, src_faces_uv, vertices, faces
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source's UV layout on the target mesh.

    src_*: the mesh that has the UVs ([V, 3], [F, 3], [V', 2], [F, 3]); vertices [W, 3] and
    faces [G, 3]: the target, in the same world and close to the source.
    Returns (vmap int64 [W'] target vertex of each new vertex, faces_new int64 [G, 3], uvs float32 [W', 2]),
    as ``recon.uv.unwrap``.
    """
    sv, sf = np.asarray(src_vertices, np.float64), np.asarray(src_faces, np.int64)
    suv, sfu = np.asarray(src_uvs, np.float64), np.asarray(src_faces_uv, np.int64)
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    charts = chart_labels(sfu, len(suv))
    vface, vbary = closest_faces(v, sv, sf)
    corner_uv = np.einsum("nk,nkc->nc", vbary, suv[sfu[vface]])[f]  # [G, 3, 2]
    cface, _ = closest_faces(v[f].mean(1), sv, sf)
    straddle = np.nonzero((charts[vface[f]] != charts[cface][:, None]).any(1))[0]
    if len(straddle):
        # affine extension of the centroid's source face to the corners of seam faces
        tri = sv[sf[cface[straddle]]]  # [n, 3, 3]
        for c in range(3):
            b = _barycentric(v[f[straddle, c]], tri)
            corner_uv[straddle, c] = np.einsum("nk,nkc->nc", b, suv[sfu[cface[straddle]]])
    keys = np.concatenate([f.reshape(-1, 1).astype(np.float64), corner_uv.reshape(-1, 2)], 1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique[:, 0].astype(np.int64), inverse.reshape(-1, 3), unique[:, 1:].astype(np.float32)


def proxy_unwrap(vertices: np.ndarray, faces: np.ndarray, proxy_faces: int, resolution: int, padding: int = 4):
    """xatlas on a decimated copy of the mesh, transferred back (xatlas' time grows faster than
    linearly with the face count: 50k faces took 20-27 s, 5k about 1 s on a loaded 2-core machine).
    Returns as ``recon.uv.unwrap``."""
    from .mesh import decimate
    from .uv import unwrap

    pv, pf = decimate(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), proxy_faces)
    vmap, pfu, puv = unwrap(pv, pf, resolution=resolution, padding=padding)
    return transfer_uvs(pv, pf, puv, pfu, vertices, faces)
