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
    vertices: np.ndarray, faces: np.ndarray, *, resolution: int = 1024, padding: int = 4,
    max_cost: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charts and a packed atlas from xatlas.

    vertices: [V, 3]; faces: [F, 3] int.
    resolution: the texture size the atlas is packed for (xatlas ``PackOptions.resolution``);
        charts are placed on whole texels of this grid.
    padding: empty texels kept between charts at that resolution (``PackOptions.padding``),
        so bilinear lookups and mip levels of one chart do not bleed into the next;
        ``dilate`` fills this gutter with the chart's edge colours.
    max_cost: xatlas ``ChartOptions.max_cost`` (None: xatlas' default 2); larger values grow
        bigger charts (fewer seams, a little more stretch) and unwrap faster.
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
    charts = xatlas.ChartOptions()
    if max_cost is not None:
        charts.max_cost = float(max_cost)
    atlas.generate(charts, pack)
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
    """Edge padding: texels within ``pixels`` rings (8-neighbour steps) outside ``mask`` take
    the colour of the nearest texel under the mask.

    Chart borders then do not fade to the background under bilinear filtering or
    mip-mapping (Blender's bake margin "extend"). One distance transform with the nearest
    texel's index, not a loop of ring averages: ~10× faster on a 1024² atlas.
    texture: [H, W, C] (or [H, W]); mask: bool [H, W]. Returns a new array, same dtype; 0 beyond the rings.
    """
    from scipy.ndimage import distance_transform_edt

    tex = np.asarray(texture)
    m = np.asarray(mask, dtype=bool)
    out = np.zeros_like(tex)
    out[m] = tex[m]
    if m.all() or not m.any() or pixels <= 0:
        return out
    dist, (iy, ix) = distance_transform_edt(~m, return_indices=True)
    # the ring of a texel is its chessboard distance to the nearest masked texel
    ring = np.maximum(np.abs(iy - np.arange(m.shape[0])[:, None]), np.abs(ix - np.arange(m.shape[1])[None, :]))
    grow = ~m & (ring <= int(pixels))
    out[grow] = tex[iy[grow], ix[grow]]
    return out
