"""Where to sample: the scene box, the visual hull, the occupancy grid, the prior's SDF grid.

The field lives in a normalised box [-1, 1]³ (``SceneBox``) fitted to the visual hull of
the masks (and the prior mesh, if any). nerfacc's ``OccGridEstimator`` skips empty space:
cells outside the visual hull are marked −1 (never sampled, never updated, like nerfacc's
``mark_invisible_cells``), and the remaining cells are seeded from the initial SDF (a band
around it, or with a prior everything from just inside it out to the hull) and then
refreshed from the field's opacity during training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import nerfacc
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from .cameras import Camera
from .dataset import ViewSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneBox:
    """World ↔ normalised coordinates: x_unit = (x_world − centre) / scale, box = [-1, 1]³."""

    centre: np.ndarray  # [3] world
    scale: float  # world units per normalised unit

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.centre) / self.scale

    def to_world(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) * self.scale + self.centre


def _axes_meeting_point(cameras: tuple[Camera, ...]) -> np.ndarray:
    """Least-squares point nearest to all optical axes, [3]."""
    a, b = np.zeros((3, 3)), np.zeros(3)
    for c in cameras:
        d = -c.c2w[:3, 2]
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ c.center
    return np.linalg.lstsq(a, b, rcond=None)[0]


def visual_hull(views: ViewSet, lo: np.ndarray, hi: np.ndarray, res: int, dilate_px: int = 2) -> np.ndarray:
    """Cells of the box [lo, hi] (res³, centres) whose centre projects inside every (dilated)
    mask or outside the image: bool [res, res, res] indexed [ix, iy, iz]."""
    axes = [np.linspace(lo[k], hi[k], res, endpoint=False) + (hi[k] - lo[k]) / res / 2 for k in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep = np.ones(len(pts), bool)
    for cam, mask in zip(views.cameras, views.masks):
        m = ndimage.binary_dilation(mask > 0.5, iterations=dilate_px) if dilate_px else mask > 0.5
        uv, depth = cam.project(pts)
        i, j = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (depth > 0) & (i >= 0) & (j >= 0) & (i < cam.w) & (j < cam.h)
        hit = np.zeros(len(pts), bool)
        hit[inside] = m[j[inside], i[inside]]
        keep &= hit | ~inside  # a view that does not see the point cannot carve it
    return keep.reshape(res, res, res)


def fit_scene_box(views: ViewSet, prior_vertices: np.ndarray | None = None, margin: float = 1.15,
                  res: int = 64) -> SceneBox:
    """A box around the visual hull (∪ the prior's bounds), padded by ``margin``."""
    centre = _axes_meeting_point(views.cameras)
    # the largest ball around the meeting point that every camera sees entirely bounds the object
    radius = min(np.linalg.norm(c.center - centre) * min(c.w / 2 / c.fx, c.h / 2 / c.fy) for c in views.cameras)
    radius = min(radius, min(np.linalg.norm(c.center - centre) for c in views.cameras) * 0.95)
    lo, hi = centre - radius, centre + radius
    hull = visual_hull(views, lo, hi, res)
    if hull.any():
        idx = np.argwhere(hull)
        cell = (hi - lo) / res
        b_lo, b_hi = lo + idx.min(0) * cell, lo + (idx.max(0) + 1) * cell
    else:
        log.warning("the visual hull is empty; using the cameras' common view")
        b_lo, b_hi = lo, hi
    if prior_vertices is not None:
        b_lo, b_hi = np.minimum(b_lo, prior_vertices.min(0)), np.maximum(b_hi, prior_vertices.max(0))
    box = SceneBox((b_lo + b_hi) / 2, float((b_hi - b_lo).max() / 2 * margin))
    log.info("scene box: centre %s, half-size %.4f", np.round(box.centre, 4), box.scale)
    return box


def mesh_sdf_grid(vertices: np.ndarray, faces: np.ndarray, box: SceneBox, res: int = 96,
                  n_samples: int = 200_000, seed: int = 0) -> np.ndarray:
    """Signed distance (normalised units, negative inside) of a mesh on a res³ grid of
    corners spanning [-1, 1]³ (indexed [ix, iy, iz]), float32 [res, res, res].

    The mesh need not be closed: a fitted template has an open neck and eye holes, and a
    textured mesh split at UV seams cracks open once smoothed. So the sign never comes from
    filling the interior (one crack and the whole inside reads "outside"); each grid point
    takes it from the normal of the surface sample nearest to it (a pseudo-normal test).
    Near the surface (3 voxels): exact distance to dense area-weighted surface samples
    (cKDTree). Elsewhere: the Euclidean distance transform to the voxelised samples, whose
    nearest-voxel indices give the sample for the distance and the sign (a k-d query for far points
    costs minutes; this costs a second).
    """
    v = box.to_unit(vertices)
    tri = v[np.asarray(faces, dtype=np.int64)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(normals, axis=1)
    rng = np.random.default_rng(seed)
    fid = rng.choice(len(tri), n_samples, p=area / area.sum())
    s, r2 = np.sqrt(rng.random(n_samples)), rng.random(n_samples)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    pts = np.einsum("nk,nkd->nd", bary, tri[fid])
    nrm = normals[fid] / np.maximum(area[fid, None], 1e-20)
    h = 2.0 / (res - 1)
    ijk = np.clip(np.rint((pts + 1) / h).astype(int), 0, res - 1)
    owner = np.full((res, res, res), -1, np.int64)  # one surface sample per occupied voxel
    owner[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = np.arange(n_samples)
    edt, near = ndimage.distance_transform_edt(owner < 0, return_indices=True)
    sample = owner[near[0], near[1], near[2]]  # [res, res, res] nearest voxel's sample
    grid = np.stack(np.meshgrid(*[np.arange(res) * h - 1] * 3, indexing="ij"), -1)
    offset = grid - pts[sample]
    sign = np.sign(np.einsum("...d,...d->...", offset, nrm[sample]))
    sign[sign == 0] = 1
    sdf = np.linalg.norm(offset, axis=-1) * sign  # to that voxel's sample, not its centre
    band = np.argwhere(edt * h < 3 * h)
    grid_pts = band * h - 1
    dist, nearest = cKDTree(pts).query(grid_pts)
    bsign = np.sign(np.einsum("nd,nd->n", grid_pts - pts[nearest], nrm[nearest]))
    bsign[bsign == 0] = 1
    sdf[band[:, 0], band[:, 1], band[:, 2]] = dist * bsign
    return sdf.astype(np.float32)


def hull_sdf_grid(views: ViewSet, box: SceneBox, res: int = 96) -> np.ndarray:
    """Signed distance (normalised units) of the visual hull on a res³ grid of corners spanning
    [-1, 1]³, float32 [res, res, res]: the initial surface when there is no prior mesh (it
    has the object's topology wherever the silhouettes show it, unlike a sphere)."""
    h = 2.0 / (res - 1)
    lo, hi = box.to_world(np.full(3, -1 - h / 2)), box.to_world(np.full(3, 1 + h / 2))
    inside = visual_hull(views, lo, hi, res, dilate_px=1)
    inside = ndimage.binary_opening(inside)  # carving leaves spurs where few views agree
    out_d = ndimage.distance_transform_edt(~inside)
    in_d = ndimage.distance_transform_edt(inside)
    return np.where(inside, -(in_d - 0.5), out_d - 0.5).astype(np.float32) * h


def make_estimator(views: ViewSet, box: SceneBox, sdf_fn, res: int, band: tuple[float, float],
                   device: str | torch.device) -> nerfacc.OccGridEstimator:
    """An ``OccGridEstimator`` over [-1, 1]³: −1 outside the visual hull, occupied where the
    initial SDF at the cell centre lies in (−band[0], band[1]) (normalised units).

    sdf_fn: (x [n, 3] normalised torch) → sdf [n].
    """
    est = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1, -1, 1, 1, 1], resolution=res, levels=1).to(device)
    hull = visual_hull(views, box.to_world(-np.ones(3)), box.to_world(np.ones(3)), res, dilate_px=3)
    hull = ndimage.binary_dilation(hull, iterations=1)
    centres = (est.grid_coords.float() + 0.5) / res * 2 - 1
    with torch.no_grad():
        sdf = torch.cat([sdf_fn(c) for c in centres.split(65536)])
    occ = ((sdf > -band[0]) & (sdf < band[1])).float()
    hull_t = torch.from_numpy(hull.reshape(-1)).to(device)
    est.occs.copy_(torch.where(hull_t, occ, torch.full_like(occ, -1.0)))
    est.binaries.copy_((est.occs > 0).view(est.binaries.shape))
    log.info("occupancy grid %d³: %d cells in the visual hull, %d occupied", res, int(hull_t.sum()),
             int(est.binaries.sum()))
    return est


def full_estimator(res: int, device: str | torch.device) -> nerfacc.OccGridEstimator:
    """An estimator with every cell occupied (no space skipping: the baseline)."""
    est = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1, -1, 1, 1, 1], resolution=res, levels=1).to(device)
    est.occs.fill_(1.0)
    est.binaries.fill_(True)
    return est


def all_rays(views: ViewSet, box: SceneBox) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pixel's ray in normalised coordinates with its target.

    Returns (origins [N, 3], directions [N, 3], rgb [N, 3], mask [N]) float32 on CPU, keeping
    only rays that hit the box (the others see background only and teach nothing).
    """
    os_, ds = [], []
    for cam in views.cameras:
        o, d = cam.rays()
        os_.append(box.to_unit(o.reshape(-1, 3)))
        ds.append(d.reshape(-1, 3))
    o = torch.from_numpy(np.concatenate(os_)).float()
    d = torch.from_numpy(np.concatenate(ds)).float()
    rgb = torch.from_numpy(views.images.reshape(-1, 3)).float()
    mask = torch.from_numpy(views.masks.reshape(-1)).float()
    t1 = (-1 - o) / d
    t2 = (1 - o) / d
    hit = torch.minimum(t1, t2).amax(-1) < torch.maximum(t1, t2).amin(-1)
    return o[hit], d[hit], rgb[hit], mask[hit]
