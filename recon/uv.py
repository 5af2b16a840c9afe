"""UV atlases: unwrap with xatlas, find each texel's face, pad chart edges.

UV convention (trimesh / OBJ / OpenGL): ``uvs`` in [0, 1], origin at the bottom-left of
the image, v up. Texture images are stored top row first, so texel (row r, column c) of an
S × S texture has its centre at ``u = (c + 0.5) / S``, ``v = 1 − (r + 0.5) / S``. GLB
export (``recon.export``) flips v as glTF requires.
"""
from __future__ import annotations

import logging

import numpy as np

from .raster import rasterize_screen

log = logging.getLogger(__name__)


def unwrap(
    vertices: np.ndarray, faces: np.ndarray, *, resolution: int = 1024, padding: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charts and a packed atlas from xatlas.

    vertices: [V, 3]; faces: [F, 3] int.
    resolution: the texture size the atlas is packed for (xatlas ``PackOptions.resolution``);
        charts are placed on whole texels of this grid.
    padding: empty texels kept between charts at that resolution (``PackOptions.padding``),
        so bilinear lookups and mip levels of one chart do not bleed into the next;
        ``dilate`` fills this gutter with the chart's edge colours.
    Returns (vmapping int64 [V'] — the original vertex of each new vertex (seams split
    vertices), faces_new int64 [F, 3] indexing the new vertices (same face order),
    uvs float32 [V', 2] in [0, 1]).
    """
    import xatlas

    v = np.ascontiguousarray(vertices, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.uint32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, faces_new, uvs = atlas[0]
    log.debug("xatlas: %d charts, %d → %d vertices", atlas.chart_count, len(v), len(vmapping))
    return vmapping.astype(np.int64), faces_new.astype(np.int64), uvs.astype(np.float32)


def uv_to_pixels(uvs: np.ndarray, size: int) -> np.ndarray:
    """UVs [N, 2] → continuous texel coordinates [N, 2] (x right, y down) of an S × S image."""
    uvs = np.asarray(uvs, dtype=np.float64)
    return np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], -1)


def rasterize_uv(uvs: np.ndarray, faces_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For every texel centre, the face whose UV triangle holds it.

    uvs: [V', 2]; faces_uv: [F, 3] int indexing ``uvs`` (face order = the mesh's faces).
    Returns (face_id int64 [S, S] (−1 outside every chart), bary float32 [S, S, 3], affine in UV
    space, so interpolating 3D corner positions gives the texel's point on the surface).
    """
    face_id, bary, _ = rasterize_screen(uv_to_pixels(uvs, size), None, faces_uv, size, size, perspective=False)
    return face_id, bary


def dilate(texture: np.ndarray, mask: np.ndarray, pixels: int = 8) -> np.ndarray:
    """Edge padding: grow the texels under ``mask`` outward by ``pixels`` rings.

    Each ring gives every empty texel next to a filled one the mean of its filled
    8-neighbours, so chart borders do not fade to the background under bilinear filtering
    or mip-mapping.
    texture: [H, W, C] (or [H, W]); mask: bool [H, W]. Returns a new array, same dtype.
    """
    tex = np.asarray(texture)
    squeeze = tex.ndim == 2
    t = (tex[..., None] if squeeze else tex).astype(np.float64)
    m = np.asarray(mask, dtype=bool).copy()
    t[~m] = 0.0
    h, w = m.shape
    for _ in range(int(pixels)):
        if m.all():
            break
        tp = np.pad(t * m[..., None], ((1, 1), (1, 1), (0, 0)))
        mp = np.pad(m.astype(np.float64), 1)
        acc = np.zeros_like(t)
        cnt = np.zeros((h, w))
        for dy in range(3):
            for dx in range(3):
                if dy == dx == 1:
                    continue
                acc += tp[dy : dy + h, dx : dx + w]
                cnt += mp[dy : dy + h, dx : dx + w]
        grow = (~m) & (cnt > 0)
        t[grow] = acc[grow] / cnt[grow, None]
        m = m | grow
    out = t[..., 0] if squeeze else t
    if np.issubdtype(tex.dtype, np.integer):
        out = np.clip(np.rint(out), np.iinfo(tex.dtype).min, np.iinfo(tex.dtype).max)
    return out.astype(tex.dtype)
