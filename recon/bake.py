"""One texture bake for every mesh: posed views → a UV texture (recon, projection, ``gen3dface bake``).

Each texel of the atlas is a point on the surface (``uv_fragments``: every face that covers
the texel centre, so overlapping and mirrored islands each bake their own surface, and the
texel averages them). Every view that sees the point votes with its colour there:

1. occlusion: the mesh is rasterised per view (``recon.raster``, back faces culled) and a
   point is seen when its camera depth is within ``eps`` of the nearest surface there;
2. angle: weight cos^p(normal, direction to the camera), p = ``angle_strictness`` (high
   values keep only the views that face the surface), cut below ``min_cos`` with a smooth
   ramp over ``cos_ramp``;
3. mask border: the weight ramps from 0 at the view's mask border (matting mixes in the
   background) to 1 ``border_px`` pixels inside;
4. equalisation: one gain per view and channel makes every view agree with the others
   where they overlap (a darker or warmer view does not print its own patch);
5. autofill: texels no view saw take ``fill(points)`` (recon: the colour field), else a
   push-pull fill from the seen texels of the atlas;
6. edge expansion: ``edge_expansion`` rings of texels around the charts take their
   neighbours' colours (bilinear lookups and mip-maps do not bleed background in).

Vectorised torch on the texel samples (CPU or CUDA); images float in [0, 1] or uint8. Speed:
the samples are sorted into bins of normal direction and a view projects only the bins whose
normal cone and bounding sphere can face it (an exact test), with one matrix product per bin
run; edge expansion touches only each ring's texels.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .cameras import Camera
from .raster import vertex_normals

log = logging.getLogger(__name__)

View = tuple  # (image [h, w, 3|4], Camera, mask bool [h, w] | None)


@dataclass(frozen=True)
class BakeConfig:
    """How views are baked into a texture (KeenTools FaceBuilder's bake options, measured)."""

    size: int = 2048
    """Texture side in texels (1024 … 8192)."""
    angle_strictness: float = 2.0
    """p in the view weight cos^p(normal, direction to the camera): 0 averages every view
    that sees a texel, higher values trust the views facing it squarely (grazing views smear)."""
    min_cos: float = 0.05
    """Views seeing the surface more obliquely than this cosine give it nothing."""
    cos_ramp: float = 0.1
    """The weight ramps in smoothly over this much cosine above ``min_cos`` (no hard seam)."""
    border_px: float = 4.0
    """The weight ramps from 0 at a view's mask border to 1 this many pixels inside."""
    edge_expansion: int = 8
    """Texels of padding grown around every chart (seam bleeding under filtering and mip-maps)."""
    equalize: bool = True
    """Equalise brightness and colour across views (one gain per view and channel)."""
    eps: float = 0.005
    """Occlusion tolerance, as a share of the mesh's bounding-box diagonal."""

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 8192:
            raise ValueError(f"bake size must be 16 … 8192 texels, got {self.size}")
        if self.angle_strictness < 0 or self.edge_expansion < 0:
            raise ValueError("angle_strictness and edge_expansion must be ≥ 0")


@dataclass
class BakeResult:
    """texture: float32 [S, S, 3] in [0, 1] (sRGB, as the views); seen: bool [S, S] texels some
    view saw; filled: bool [S, S] texels autofilled; chart: bool [S, S] texels on the atlas;
    gains: float32 [V, 3] per-view colour gains; seconds: timings of the steps."""

    texture: np.ndarray
    seen: np.ndarray
    filled: np.ndarray
    chart: np.ndarray
    gains: np.ndarray
    seconds: dict = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Share of the atlas' texels seen by a view."""
        return float(self.seen.sum() / max(1, self.chart.sum()))

    @property
    def autofilled(self) -> float:
        """Share of the atlas' texels autofilled."""
        return float(self.filled.sum() / max(1, self.chart.sum()))


@dataclass(frozen=True)
class TexelSamples:
    """Texel centres on the surface: one sample per (texel, face covering it).

    pix: int64 [N] flat texel index (row · S + col); face: int64 [N]; bary: float32 [N, 3];
    points, normals: float32 [N, 3] world (normals unit, interpolated vertex normals).
    """

    pix: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    corners: torch.Tensor
    """float32 [F, 3, 3], the faces' corner positions."""
    corner_normals: torch.Tensor
    """float32 [F, 3, 3], the faces' corner normals."""
    runs: tuple
    """(face [R], start [R], count [R]): each face's samples are one contiguous run."""

    def candidates(self, centre: torch.Tensor, min_cos: float, margin: float = 0.15) -> torch.Tensor | None:
        """Indices [n] of the samples on faces that may face ``centre`` [3] (a corner's cosine
        above min_cos − margin; interpolated normals stay near their corners'), or None for all."""
        d = centre - self.corners  # [F, 3, 3]
        cos = (self.corner_normals * d).sum(-1) / d.norm(dim=-1).clamp_min(1e-12)
        ok = cos.amax(1) > min_cos - margin
        rf, rs, rc = self.runs
        keep = ok[rf]
        if keep.float().mean() > 0.8:
            return None
        rs, rc = rs[keep], rc[keep]
        base = torch.repeat_interleave(rs - (torch.cumsum(rc, 0) - rc), rc)
        return base + torch.arange(len(base), device=base.device)


def triangle_fragments(xy: torch.Tensor, faces: torch.Tensor, h: int, w: int,
                       chunk: int = 1 << 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (pixel centre, triangle holding it) pair, either winding, no depth test.

    Faces are bucketed by the size of their pixel bounding box (powers of two) and each
    bucket is tested on a dense [faces, B, B] grid by broadcasting: no per-candidate
    gathers, which made a flat candidate list several times slower on the CPU.
    xy: [V, 2] continuous pixel coordinates (x right, y down; centres at i + 0.5); faces: [F, 3].
    Returns (pix int64 [N] = row · w + col, face int64 [N], bary float32 [N, 3] screen-affine).
    """
    device = xy.device
    tri = xy.double()[faces] - 0.5  # [F, 3, 2], texel-centre origin
    lo = torch.ceil(tri.amin(1)).clamp_min(0)
    hi = torch.minimum(torch.floor(tri.amax(1)), torch.tensor([w - 1.0, h - 1.0], dtype=tri.dtype, device=device))
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    ok = ((hi - lo).amin(1) >= 0) & (area.abs() > 1e-12) & torch.isfinite(tri).all(2).all(1)
    t = (tri - lo[:, None, :]).float()  # small local coordinates: float32 is exact enough
    inv = (1.0 / torch.where(ok, area, torch.ones_like(area))).float()
    # edge functions l_i = a_i x + b_i y + c_i for corners (1, 2) → l0 and (2, 0) → l1
    coef = []
    for i, j in ((1, 2), (2, 0)):
        a = (t[:, i, 1] - t[:, j, 1]) * inv
        b = (t[:, j, 0] - t[:, i, 0]) * inv
        c = (t[:, i, 0] * t[:, j, 1] - t[:, j, 0] * t[:, i, 1]) * inv
        coef.append((a, b, c))
    ext = (hi - lo + 1).clamp_min(1)
    kx, ky = (torch.clamp(torch.ceil(torch.log2(ext[:, i])), 0, 20).long() for i in (0, 1))
    bucket = kx * 32 + ky
    out_p, out_f, out_b = [], [], []
    lo = lo.long()
    for key in torch.unique(bucket[ok]).tolist():
        bx, by = 1 << (key // 32), 1 << (key % 32)
        sel = (ok & (bucket == key)).nonzero()[:, 0]
        gx = torch.arange(bx, device=device, dtype=torch.float32)[None, None, :]
        gy = torch.arange(by, device=device, dtype=torch.float32)[None, :, None]
        step = max(1, chunk // (bx * by))
        for s0 in range(0, len(sel), step):
            fs = sel[s0:s0 + step]
            (a0, b0, c0), (a1, b1, c1) = [(a[fs, None, None], b[fs, None, None], c[fs, None, None]) for a, b, c in coef]
            l0 = a0 * gx + (b0 * gy + c0)  # [n, by, bx]
            l1 = a1 * gx + (b1 * gy + c1)
            inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l0 + l1 <= 1 + 1e-6)
            inside &= (gx + lo[fs, 0, None, None] < w) & (gy + lo[fs, 1, None, None] < h)
            fi, yy, xx = inside.nonzero(as_tuple=True)
            p0, p1 = l0[fi, yy, xx].clamp_min(0), l1[fi, yy, xx].clamp_min(0)
            lam = torch.stack([p0, p1, (1 - p0 - p1).clamp_min(0)], -1)
            out_b.append(lam / lam.sum(-1, keepdim=True).clamp_min(1e-12))
            face = fs[fi]
            out_p.append((lo[face, 1] + yy) * w + lo[face, 0] + xx)
            out_f.append(face)
    if not out_p:
        e = torch.zeros(0, dtype=torch.long, device=device)
        return e, e, torch.zeros((0, 3), device=device)
    return torch.cat(out_p), torch.cat(out_f), torch.cat(out_b)


def uv_fragments(uvs: np.ndarray, faces_uv: np.ndarray, size: int, device="cpu"):
    """Every (texel centre, UV triangle holding it) pair of an S × S atlas: overlapping
    islands give a texel several samples, mirrored ones work as any other.

    uvs: [V', 2] (``recon.uv`` convention: v up); faces_uv: [F, 3].
    Returns (pix int64 [N] = row · S + col, face int64 [N], bary float32 [N, 3] UV-affine).
    """
    uv = torch.as_tensor(np.asarray(uvs, np.float64), device=device)
    xy = torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], -1)
    return triangle_fragments(xy, torch.as_tensor(np.asarray(faces_uv, np.int64), device=device), size, size)


def depth_map(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, cull_back: bool = False) -> torch.Tensor:
    """Camera depth of the nearest surface per pixel, float32 [h · w] (inf where empty).

    vertices: [V, 3] world float32; faces: [F, 3].
    cull_back: skip faces turned away (exact for closed meshes wound counter-clockwise seen
        from outside, as recon's; a user's mesh may be wound either way).
    """
    rot = torch.as_tensor(camera.c2w[:3, :3], dtype=torch.float32, device=vertices.device)
    centre = torch.as_tensor(camera.center, dtype=torch.float32, device=vertices.device)
    pc = (vertices - centre) @ rot
    z = -pc[:, 2]
    front = z[faces].amin(1) > 1e-4
    xy = torch.stack([camera.cx + camera.fx * pc[:, 0] / z.clamp_min(1e-9),
                      camera.cy - camera.fy * pc[:, 1] / z.clamp_min(1e-9)], -1)
    tri = xy[faces]
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    keep = front & (area < 0) if cull_back else front  # y down: facing the camera is clockwise
    sel = keep.nonzero()[:, 0]
    pix, fi, lam = triangle_fragments(xy, faces[sel], int(camera.h), int(camera.w))
    zf = z[faces[sel]][fi]  # [n, 3]
    d = 1.0 / (lam / zf).sum(1)  # perspective-correct depth
    out = torch.full((int(camera.h) * int(camera.w),), float("inf"), device=vertices.device)
    return out.scatter_reduce_(0, pix, d.float(), "amin")


def texel_samples(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, faces_uv: np.ndarray, size: int,
                  device="cpu") -> TexelSamples:
    """The surface point and normal behind every (texel, face) of the atlas.

    vertices: [V, 3]; faces: [F, 3]; uvs: [V', 2]; faces_uv: [F, 3] (same face order).
    """
    pix, face, bary = uv_fragments(uvs, faces_uv, size, device)
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    corners = torch.as_tensor(v[f], dtype=torch.float32, device=device)  # [F, 3, 3]
    ncorners = torch.as_tensor(vertex_normals(v, f)[f], dtype=torch.float32, device=device)
    points = torch.einsum("nk,nkc->nc", bary, corners[face])
    normals = F.normalize(torch.einsum("nk,nkc->nc", bary, ncorners[face]), dim=1, eps=1e-12)
    rf, rc = torch.unique_consecutive(face, return_counts=True)
    return TexelSamples(pix, face, bary, points, normals, corners, ncorners, (rf, torch.cumsum(rc, 0) - rc, rc))


def _to_float(image) -> np.ndarray:
    a = np.asarray(image)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def _border_weight(mask: torch.Tensor, border_px: float) -> torch.Tensor:
    """min(1, ~distance to the mask's outside / border_px), float32 [h, w] (image edge = outside).

    Iterated 3 × 3 erosions (chessboard distance): a few cheap pooling passes instead of a
    Euclidean transform per view."""
    m = mask.float()[None, None]
    if border_px <= 0:
        return m[0, 0]
    steps = max(1, int(np.ceil(border_px)))
    acc = torch.zeros_like(m)
    cur = m
    for _ in range(steps):
        acc += cur
        cur = -F.max_pool2d(F.pad(-cur, (1, 1, 1, 1), value=0.0), 3, 1)  # erosion, outside = 0
    return (acc[0, 0] / border_px).clamp(0, 1)


class _View:
    """One view prepared for sampling: colour + border weight planes, depth map, camera."""

    def __init__(self, image, camera: Camera, mask, vertices, faces, config: BakeConfig, device, cull_back=False):
        img = _to_float(image)
        if mask is None:
            mask = img[..., 3] > 0.5 if img.shape[2] == 4 else np.ones(img.shape[:2], bool)
        h, w = img.shape[:2]
        self.camera, self.h, self.w = camera, h, w
        m = torch.as_tensor(np.asarray(mask, bool), device=device)
        planes = torch.as_tensor(img[..., :3], device=device).permute(2, 0, 1)
        self.planes = torch.cat([planes, _border_weight(m, config.border_px)[None]])[None]  # [1, 4, h, w]
        self.depth = depth_map(torch.as_tensor(vertices, dtype=torch.float32, device=device),
                               torch.as_tensor(faces, device=device), camera, cull_back)
        self.rot = torch.as_tensor(camera.c2w[:3, :3], dtype=torch.float32, device=device)
        self.centre = torch.as_tensor(camera.center, dtype=torch.float32, device=device)

    def sample(self, points: torch.Tensor, normals: torch.Tensor, config: BakeConfig, eps: float,
               candidates: torch.Tensor | None = None):
        """(index [n] of the points seen, colour [n, 3], weight [n]) for points [N, 3], normals [N, 3];
        candidates: indices of the only points that may be seen (None: all)."""
        if candidates is not None:
            idx, colour, weight = self.sample(points[candidates], normals[candidates], config, eps)
            return candidates[idx], colour, weight
        return self.sample_packed(pack(points, normals), config, eps)

    def sample_packed(self, packed: torch.Tensor, config: BakeConfig, eps: float):
        """``sample`` on ``pack(points, normals)`` [N, 8]: one matrix product gives every point's
        camera coordinates and n · (centre − point), so each view touches all N points only a few times."""
        rot, c = self.rot, self.centre
        m = torch.zeros((8, 4), dtype=packed.dtype, device=packed.device)
        m[:3, :3] = rot
        m[3:6, 3] = c
        m[6, 3] = -1.0
        m[7, :3] = -(c @ rot)
        cam4 = packed @ m  # [N, 4]: camera x, y, z (OpenGL: looking down −Z) and cos · distance
        dist = cam4[:, :3].norm(dim=1)
        front = ((cam4[:, 3] > config.min_cos * dist) & (cam4[:, 2] < -1e-4)).nonzero()[:, 0]
        pc, dist = cam4[front], dist[front]
        cam = self.camera
        z = -pc[:, 2]
        u = cam.cx + cam.fx * pc[:, 0] / z
        v = cam.cy - cam.fy * pc[:, 1] / z
        inside = (u >= 0) & (u < self.w) & (v >= 0) & (v < self.h)
        pix = v.long().clamp_(0, self.h - 1) * self.w + u.long().clamp_(0, self.w - 1)
        keep = (inside & (z <= self.depth[pix] + eps)).nonzero()[:, 0]
        idx = front[keep]
        grid = torch.stack([u[keep] * (2.0 / self.w) - 1, v[keep] * (2.0 / self.h) - 1], -1)[None, None]
        got = F.grid_sample(self.planes, grid, mode="bilinear", padding_mode="border", align_corners=False)
        got = got[0, :, 0].T  # [n, 4]
        c = pc[keep, 3] / dist[keep]
        weight = c.pow(config.angle_strictness) * got[:, 3]
        if config.cos_ramp > 0:
            t = ((c - config.min_cos) / config.cos_ramp).clamp(0, 1)
            weight = weight * t * t * (3 - 2 * t)
        return idx, got[:, :3], weight


def pack(points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """[N, 8] = point, normal, normal · point, 1: the rows ``_View.sample_packed`` projects."""
    ones = torch.ones((len(points), 1), dtype=points.dtype, device=points.device)
    return torch.cat([points, normals, (points * normals).sum(1, keepdim=True), ones], 1)


class _DirectionBins:
    """Samples sorted into bins of normal direction (azimuth-major, so a view's bins are few
    runs), with each bin's normal cone and bounding sphere: a view skips, without touching them,
    the bins that cannot face it (an exact test, so nothing it could see is lost)."""

    def __init__(self, points: torch.Tensor, normals: torch.Tensor, n_az: int = 24, n_el: int = 8):
        az = ((torch.atan2(normals[:, 1], normals[:, 0]) / (2 * np.pi) + 0.5) * n_az).long().clamp_(0, n_az - 1)
        el = ((normals[:, 2] + 1) * (n_el / 2)).long().clamp_(0, n_el - 1)
        key = az * n_el + el
        self.order = torch.argsort(key, stable=True)
        key = key[self.order]
        pts, nrm = points[self.order], normals[self.order]
        nb = n_az * n_el
        self.count = torch.bincount(key, minlength=nb)
        self.start = torch.cumsum(self.count, 0) - self.count
        n = self.count.clamp_min(1)[:, None].to(points.dtype)
        self.axis = F.normalize(torch.zeros((nb, 3), dtype=points.dtype, device=points.device).index_add_(0, key, nrm),
                                dim=1, eps=1e-12)
        cos = (nrm * self.axis[key]).sum(1)
        self.cos_min = torch.ones(nb, dtype=points.dtype, device=points.device).scatter_reduce_(0, key, cos, "amin")
        self.centre = torch.zeros((nb, 3), dtype=points.dtype, device=points.device).index_add_(0, key, pts) / n
        r = (pts - self.centre[key]).norm(dim=1)
        self.radius = torch.zeros(nb, dtype=points.dtype, device=points.device).scatter_reduce_(0, key, r, "amax")

    def ranges(self, camera_centre: torch.Tensor, min_cos: float, chunk: int = 1 << 18) -> list[tuple[int, int]]:
        """[(start, stop)] of the sorted samples that may face a camera at ``camera_centre``: a
        normal within the bin's cone (half-angle θ) sees the camera only if the angle between
        the axis and the direction to the bin's sphere, less θ and the sphere's half-angle φ,
        stays below acos(min_cos). Runs are cut into ``chunk`` samples: small temporaries are
        reused by the allocator where large ones cost page faults."""
        d = camera_centre - self.centre
        dist = d.norm(dim=1)
        alpha = torch.acos(((self.axis * d).sum(1) / dist.clamp_min(1e-12)).clamp(-1, 1))
        theta = torch.acos(self.cos_min.clamp(-1, 1))
        phi = torch.asin((self.radius / dist.clamp_min(1e-12)).clamp(0, 1))
        keep = ((alpha - theta - phi < float(np.arccos(min_cos)) + 1e-3) | (dist <= self.radius)) & (self.count > 0)
        out: list[tuple[int, int]] = []
        for b in keep.nonzero()[:, 0].tolist():
            a, e = int(self.start[b]), int(self.start[b] + self.count[b])
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], e)
            else:
                out.append((a, e))
        return [(i, min(i + chunk, e)) for a, e in out for i in range(a, e, chunk)]


def _gains(views: list[_View], samples: TexelSamples, config: BakeConfig, eps: float, n_sub: int = 1 << 16,
           iterations: int = 8) -> torch.Tensor:
    """Per-view, per-channel gains [V, 3] that make the views agree where they overlap.

    Alternating least squares on a subsample of texels: the consensus is the weighted mean
    of the gained colours, each view's gain the ratio that best maps it onto the consensus;
    the gains' weighted geometric mean is kept at 1 (the bake's overall exposure stays the views').
    """
    n = len(samples.points)
    device = samples.points.device
    sub = torch.linspace(0, n - 1, min(n, n_sub), device=device).long()
    nv = len(views)
    col = torch.zeros((nv, len(sub), 3), device=device)
    wgt = torch.zeros((nv, len(sub)), device=device)
    packed = pack(samples.points[sub], samples.normals[sub])
    for k, view in enumerate(views):
        idx, c, w = view.sample_packed(packed, config, eps)
        col[k, idx], wgt[k, idx] = c, w
    overlap = (wgt > 0).sum(0) >= 2
    gains = torch.ones((nv, 3), device=device)
    if overlap.sum() < 16:
        return gains
    col, wgt = col[:, overlap], wgt[:, overlap, None]
    for _ in range(iterations):
        consensus = (wgt * gains[:, None] * col).sum(0) / wgt.sum(0).clamp_min(1e-12)  # [m, 3]
        num = (wgt * col * consensus).sum(1)
        den = (wgt * col * col).sum(1).clamp_min(1e-12)
        gains = (num / den).clamp(0.5, 2.0)
        share = wgt.sum(1).clamp_min(1e-12)  # [V, 1]
        gains = gains / torch.exp((share * gains.log()).sum(0) / share.sum(0))
    return gains


def push_pull(texture: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the unknown texels from the known ones through a mip pyramid (push: weighted 2 × 2
    averages down to one texel; pull: unknown texels take the upsampled coarser level).

    texture: float32 [H, W, C]; known: bool [H, W]. Returns float32 [H, W, C] (known texels unchanged).
    """
    t = torch.as_tensor(np.asarray(texture, np.float32)).permute(2, 0, 1)[None]
    w = torch.as_tensor(np.asarray(known, np.float32))[None, None]
    levels = []
    cw, cwt = t * w, w
    while min(cw.shape[-2:]) > 1:
        levels.append((cw, cwt))
        h, wd = cw.shape[-2:]
        cw = F.avg_pool2d(F.pad(cw, (0, wd % 2, 0, h % 2)), 2) * 4
        cwt = F.avg_pool2d(F.pad(cwt, (0, wd % 2, 0, h % 2)), 2) * 4
    colour = cw / cwt.clamp_min(1e-12)
    for lw, lwt in reversed(levels):
        up = F.interpolate(colour, scale_factor=2, mode="bilinear", align_corners=False)[..., :lw.shape[-2], :lw.shape[-1]]
        colour = torch.where(lwt > 0, lw / lwt.clamp_min(1e-12), up)
    out = colour[0].permute(1, 2, 0).numpy()
    out[known] = texture[known]
    return out


def expand_edges(texture: np.ndarray, mask: np.ndarray, rings: int) -> np.ndarray:
    """Grow ``rings`` rings of texels around ``mask``: each new texel takes the mean of its
    8-neighbours already filled (Blender's bake margin). Only the ring's texels are touched
    (the last ring's neighbours give the next, a gather of 8 neighbours fills them), not the full image.
    texture: [H, W, C]; mask: bool [H, W]. Returns float32 [H, W, C] (0 beyond the rings)."""
    h, w = mask.shape
    tex = np.asarray(texture, np.float32)
    out = np.zeros((h + 2, w + 2, tex.shape[2]), np.float32)  # a 1-texel frame: no wrap-around
    out[1:-1, 1:-1] = np.where(mask[..., None], tex, np.float32(0))
    filled = np.zeros((h + 2, w + 2), bool)
    filled[1:-1, 1:-1] = mask
    inner = np.zeros_like(filled)
    inner[1:-1, 1:-1] = True
    flat, known = out.reshape(-1, tex.shape[2]), filled.reshape(-1)
    offsets = np.array([dy * (w + 2) + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    ring = np.flatnonzero(ndimage.binary_dilation(filled, np.ones((3, 3), bool)) & ~filled & inner)
    for k in range(rings):
        if k:  # the next ring: the last one's neighbours not yet filled
            ring = np.unique((ring[:, None] + offsets).ravel())
            ring = ring[~known[ring] & inner.reshape(-1)[ring]]
        if not len(ring):
            break
        nbr = ring[:, None] + offsets  # [n, 8]
        wgt = known[nbr].astype(np.float32)
        flat[ring] = (flat[nbr] * wgt[..., None]).sum(1) / wgt.sum(1, keepdims=True)
        known[ring] = True
    return out[1:-1, 1:-1].copy()


def bake(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, faces_uv: np.ndarray, views: Sequence[View],
         config: BakeConfig = BakeConfig(), fill: Callable[[np.ndarray], np.ndarray] | None = None,
         device="cpu", cull_back: bool = False) -> BakeResult:
    """Bake a base-colour texture of the mesh from posed views (steps in the module docstring).

    vertices: [V, 3] world; faces: [F, 3]; uvs: [V', 2] in [0, 1] (v up); faces_uv: [F, 3].
    views: (image [h, w, 3|4] uint8/float, Camera, mask bool [h, w] or None) per view.
    fill: (points [n, 3] world) → rgb [n, 3] in [0, 1] for texels no view saw (None: push-pull).
    cull_back: the mesh is closed and wound counter-clockwise seen from outside (recon's):
        back faces are skipped when rendering the depth maps.
    """
    t0 = time.perf_counter()
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    size = config.size
    eps = config.eps * float(np.linalg.norm(np.ptp(v, axis=0)))
    samples = texel_samples(v, f, uvs, faces_uv, size, device)
    t1 = time.perf_counter()
    prepared = [_View(img, cam, mask, v, f, config, device, cull_back) for img, cam, mask in views]
    t2 = time.perf_counter()
    gains = _gains(prepared, samples, config, eps) if config.equalize and len(prepared) > 1 else \
        torch.ones((len(prepared), 3), device=samples.points.device)
    bins = _DirectionBins(samples.points, samples.normals)
    packed = pack(samples.points[bins.order], samples.normals[bins.order])
    acc = torch.zeros((len(packed), 4), device=packed.device)  # per sample: Σ w · gain · colour, Σ w
    for k, view in enumerate(prepared):
        for a, e in bins.ranges(view.centre, config.min_cos):
            idx, colour, weight = view.sample_packed(packed[a:e], config, eps)
            acc.index_add_(0, idx + a, torch.cat([colour * (gains[k] * weight[:, None]), weight[:, None]], 1))
    per_texel = torch.zeros((size * size, 4), device=packed.device)
    per_texel.index_add_(0, samples.pix[bins.order], acc)  # a texel's samples (overlapping islands) pooled
    acc, wsum = per_texel[:, :3], per_texel[:, 3]
    t3 = time.perf_counter()
    chart = torch.zeros(size * size, dtype=torch.bool, device=acc.device)
    chart[samples.pix] = True
    seen = wsum > 0
    tex = (acc / wsum.clamp_min(1e-12)[:, None]).clamp(0, 1)
    chart_np, seen_np = chart.reshape(size, size).cpu().numpy(), seen.reshape(size, size).cpu().numpy()
    texture = tex.reshape(size, size, 3).cpu().numpy()
    filled = chart_np & ~seen_np
    if filled.any():
        if fill is not None:
            need = (~seen[samples.pix]).nonzero()[:, 0]  # one sample per unseen texel is enough
            pix = samples.pix[need].cpu().numpy()
            pix, first = np.unique(pix, return_index=True)
            pts = samples.points[need[torch.as_tensor(first, device=need.device)]].cpu().numpy().astype(np.float64)
            texture.reshape(-1, 3)[pix] = np.clip(np.asarray(fill(pts), np.float32), 0, 1)
        else:
            texture = np.where(chart_np[..., None], push_pull(texture, seen_np), 0).astype(np.float32)
    texture = expand_edges(texture, chart_np, config.edge_expansion)
    t4 = time.perf_counter()
    secs = {"samples": t1 - t0, "views": t2 - t1, "project": t3 - t2, "fill_pad": t4 - t3, "total": t4 - t0}
    log.info("bake %d²: %d views, %.1f%% seen, %.1f%% autofilled, %.2f s", size, len(prepared),
             100 * seen_np.sum() / max(1, chart_np.sum()), 100 * filled.sum() / max(1, chart_np.sum()), secs["total"])
    return BakeResult(texture, seen_np, filled, chart_np, gains.cpu().numpy(), secs)


def point_projector(image, camera: Camera, mask, vertices: np.ndarray, faces: np.ndarray, border_px: float,
                    device="cpu") -> Callable:
    """One view prepared once (colour + border planes, depth map; ``_View``) for projecting any
    surface points into it: returns ``project(points, normals, angle_power, min_cos, cos_ramp,
    eps) -> (colour float32 [N, 3], weight float32 [N])``, 0 where not seen (steps 1–3 of the
    module docstring, ``eps`` in metres). For callers that weight views themselves (the
    projection backend's vertices, texels and mirrored points)."""
    base = BakeConfig(border_px=border_px)
    view = _View(image, camera, mask, np.asarray(vertices, np.float32), np.asarray(faces, np.int64), base, device)

    def project(points, normals, angle_power: float, min_cos: float, cos_ramp: float, eps: float):
        cfg = BakeConfig(angle_strictness=angle_power, min_cos=min_cos, cos_ramp=cos_ramp, border_px=border_px)
        p = torch.as_tensor(np.asarray(points, np.float32), device=device)
        n = torch.as_tensor(np.asarray(normals, np.float32), device=device)
        idx, c, w = view.sample(p, n, cfg, eps)
        colour = np.zeros((len(p), 3), np.float32)
        weight = np.zeros(len(p), np.float32)
        colour[idx.cpu().numpy()] = c.cpu().numpy()
        weight[idx.cpu().numpy()] = w.cpu().numpy()
        return colour, weight

    return project
