"""Texture baking from posed images, and rendering a textured mesh (its inverse).

Baking (Gen3D-Face's final step, and the projection backend's texturing): every texel of
the UV atlas is a point on the surface with a normal; each view that sees the point
(z-buffer test, ``recon.raster.visible_points``) votes with its colour there, weighted by
how squarely it sees the surface (cos^p of the angle between normal and view direction:
grazing views smear) and by the distance of the pixel to the mask border (matting and
silhouette pixels mix in the background). The texture is the weighted average.

Images are float in [0, 1] or uint8; RGBA images use their alpha as the mask unless a
mask is given. Continuous pixel coordinates as in ``recon.cameras``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from .cameras import Camera
from .raster import interpolate, rasterize, vertex_normals, visible_points
from .uv import rasterize_uv, uv_to_pixels


@dataclass(frozen=True)
class TexelGeometry:
    """The surface point behind each texel inside a chart.

    rows, cols: int64 [N], the covered texels; face: int64 [N], their faces;
    bary: float64 [N, 3], the texels' barycentrics in their faces (UV-affine = 3D-affine);
    points: float64 [N, 3] world; normals: float64 [N, 3] unit (interpolated vertex normals);
    mask: bool [S, S], covered texels.
    """

    rows: np.ndarray
    cols: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    mask: np.ndarray


def texel_geometry(vertices, faces, uvs, faces_uv, size: int, uv_raster=None) -> TexelGeometry:
    """Surface points and normals of the texels of an S × S atlas.

    vertices: [V, 3]; faces: [F, 3]; uvs: [V', 2]; faces_uv: [F, 3] (same face order).
    uv_raster: ``rasterize_uv(uvs, faces_uv, size)`` if already known (it depends on the
        atlas only, not on the vertex positions), else computed.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fid, bary = uv_raster if uv_raster is not None else rasterize_uv(uvs, faces_uv, size)
    rows, cols = np.nonzero(fid >= 0)
    face = fid[rows, cols]
    b = bary[rows, cols].astype(np.float64)  # [N, 3]
    points = np.einsum("nk,nkc->nc", b, v[f[face]])
    normals = np.einsum("nk,nkc->nc", b, vertex_normals(v, f)[f[face]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return TexelGeometry(rows, cols, face, b, points, normals, fid >= 0)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float image → float32 in [0, 1] ([h, w, C])."""
    a = np.asarray(image)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample ``image`` [h, w, C] at continuous pixel coordinates ``uv`` [N, 2] (clamped at the border)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def border_weight(mask: np.ndarray, border_px: float) -> np.ndarray:
    """min(1, distance to the nearest pixel outside ``mask`` / border_px), float32 [h, w]."""
    if border_px <= 0:
        return mask.astype(np.float32)
    d = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]  # the image edge counts as outside
    return np.clip(d / border_px, 0, 1).astype(np.float32)


def project_points(
    points: np.ndarray,
    normals: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    image: np.ndarray,
    camera: Camera,
    mask: np.ndarray | None = None,
    *,
    angle_power: float = 2.0,
    border_px: float = 6.0,
    min_cos: float = 0.05,
    eps: float = 2e-3,
    frags=None,
    cos_ramp: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Colour and weight of surface points seen in one view.

    points, normals: [N, 3] world; vertices/faces: the occluding mesh; image: [h, w, 3|4];
    mask: bool [h, w] (None: alpha > 0.5 for RGBA, else everything).
    min_cos, cos_ramp: points seen more obliquely than ``min_cos`` get no weight, and the
        weight ramps in smoothly over the next ``cos_ramp`` (0: a hard cut); grazing
        views smear the image and mix in what lies beside the surface.
    Returns (colour float32 [N, 3], weight float32 [N], 0 where not seen).
    """
    img = to_float(image)
    if mask is None:
        mask = img[..., 3] > 0.5 if img.shape[2] == 4 else np.ones(img.shape[:2], bool)
    if frags is None:
        frags = rasterize(vertices, faces, camera)
    vis = visible_points(points, vertices, camera, frags, eps)
    uv, _ = camera.project(points)
    to_cam = camera.center - points
    to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("nk,nk->n", normals, to_cam)
    ok = vis & (cos > min_cos)
    weight = np.zeros(len(points), np.float32)
    colour = np.zeros((len(points), 3), np.float32)
    if ok.any():
        bw = sample_bilinear(border_weight(np.asarray(mask, bool), border_px)[..., None], uv[ok])[:, 0]
        ramp = 1.0
        if cos_ramp > 0:
            t = np.clip((cos[ok] - min_cos) / cos_ramp, 0, 1)
            ramp = t * t * (3 - 2 * t)
        weight[ok] = (cos[ok] ** angle_power) * bw * ramp
        colour[ok] = sample_bilinear(img[..., :3], uv[ok])
    return colour, weight


def bake_from_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    faces_uv: np.ndarray,
    views: list[tuple[np.ndarray, Camera, np.ndarray | None]],
    size: int,
    *,
    angle_power: float = 2.0,
    border_px: float = 6.0,
    min_cos: float = 0.05,
    eps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bake a texture from posed images by visibility- and angle-weighted averaging.

    vertices: [V, 3]; faces: [F, 3]; uvs: [V', 2]; faces_uv: [F, 3] (same face order).
    views: (image [h, w, 3|4] uint8/float, camera, mask bool [h, w] or None) per view.
    angle_power: p in the weight cos^p(normal, view direction); higher favours frontal views.
    border_px: weight ramps from 0 at the mask border to 1 this many pixels inside.
    min_cos: views seeing the surface more obliquely than this cosine are ignored.
    eps: visibility tolerance in metres (None: 0.5 % of the mesh's bounding-box diagonal).
    Returns (texture float32 [S, S, 3] in [0, 1], 0 where unseen; weight float32 [S, S]).
    """
    v = np.asarray(vertices, dtype=np.float64)
    if eps is None:
        eps = 0.005 * float(np.linalg.norm(np.ptp(v, axis=0)))
    geo = texel_geometry(v, faces, uvs, faces_uv, size)
    acc = np.zeros((len(geo.points), 3), np.float64)
    wsum = np.zeros(len(geo.points), np.float64)
    for image, camera, mask in views:
        colour, weight = project_points(
            geo.points, geo.normals, v, faces, image, camera, mask,
            angle_power=angle_power, border_px=border_px, min_cos=min_cos, eps=eps,
        )
        acc += colour * weight[:, None]
        wsum += weight
    texture = np.zeros((size, size, 3), np.float32)
    weight_img = np.zeros((size, size), np.float32)
    seen = wsum > 0
    texture[geo.rows[seen], geo.cols[seen]] = acc[seen] / wsum[seen, None]
    weight_img[geo.rows, geo.cols] = wsum
    return texture, weight_img


def render_textured(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    faces_uv: np.ndarray,
    texture: np.ndarray,
    camera: Camera,
    frags=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unlit render of a UV-textured mesh (bilinear texture lookup).

    texture: [S, S, C] uint8 or float. Returns (colour float32 [h, w, C], covered bool [h, w]).
    """
    if frags is None:
        frags = rasterize(vertices, faces, camera)
    tex = to_float(texture)
    corner_uv = np.asarray(uvs, dtype=np.float32)[np.asarray(faces_uv)]  # [F, 3, 2]
    uv = interpolate(corner_uv, frags)
    out = np.zeros((*frags.face_id.shape, tex.shape[2]), np.float32)
    m = frags.mask
    out[m] = sample_bilinear(tex, uv_to_pixels(uv[m], tex.shape[0]))
    return out, m
