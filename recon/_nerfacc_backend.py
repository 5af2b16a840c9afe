"""The one module that touches nerfacc's compiled ops, with pure-torch CPU stand-ins beside it.

nerfacc 0.5.3 (docs/architecture.md, "Dependencies") imports without compiling anything: its ``_C``
extension is JIT-built by ``nerfacc.cuda._backend`` on the first call of an op that needs
it. On CPU these raise (``pack_info`` → NotImplementedError) or would try to build:
``pack_info``, the packed (flattened) scans behind ``render_weight_from_alpha`` /
``render_visibility_from_alpha``, ``ray_aabb_intersect`` and ``OccGridEstimator.sampling``
(``traverse_grids``). Everything else we use is pure torch in nerfacc and runs on both:
``accumulate_along_rays``, ``OccGridEstimator`` construction and its occupancy updates.

``select_ops(device)`` picks the implementation once, at construction, and logs it. The
CUDA path calls nerfacc itself; set ``TORCH_EXTENSIONS_DIR`` to a writable cache before the
first CUDA run (the JIT build takes minutes once).

Packed layout (nerfacc's): samples of one ray are contiguous, rays in increasing order;
``packed_info`` [n_rays, 2] holds (start, count) per ray.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import nerfacc
import torch
from torch import Tensor

log = logging.getLogger(__name__)


# --- CPU stand-ins (pure torch, differentiable where nerfacc's are) -------------------------

def pack_info(ray_indices: Tensor, n_rays: int) -> Tensor:
    """Stand-in for ``nerfacc.pack_info``. ray_indices: [n_samples] sorted → [n_rays, 2] (start, count)."""
    cnts = torch.bincount(ray_indices.long(), minlength=n_rays)[:n_rays]
    starts = torch.cumsum(cnts, 0) - cnts
    return torch.stack([starts, cnts], -1)


def _padded_index(packed_info: Tensor, n: int) -> tuple[Tensor, Tensor, int]:
    """(row [n], col [n], width) placing packed samples in a [n_rays, width] batch."""
    starts, cnts = packed_info.long().unbind(-1)
    rows = torch.repeat_interleave(torch.arange(len(cnts), device=cnts.device), cnts, output_size=n)
    cols = torch.arange(n, device=cnts.device) - starts[rows]
    width = int(cnts.max()) if len(cnts) else 0
    return rows, cols, width


def _packed_scan(inputs: Tensor, packed_info: Tensor, op: str, exclusive: bool) -> Tensor:
    """Scan per ray of a flattened tensor by padding to [n_rays, width] and using torch's batched scan.

    Padding (instead of a global cumsum minus offsets) keeps float32 sums exact per ray and
    gives cumprod's correct gradient at zeros, which nerfacc's docs warn its kernel lacks.
    """
    if inputs.numel() == 0:
        return inputs.clone()
    rows, cols, width = _padded_index(packed_info, inputs.shape[0])
    fill = 1.0 if op == "prod" else 0.0
    batch = inputs.new_full((packed_info.shape[0], width + int(exclusive)), fill)
    batch = batch.index_put((rows, cols + int(exclusive)), inputs)
    scan = torch.cumprod(batch, 1) if op == "prod" else torch.cumsum(batch, 1)
    return scan[rows, cols]


def inclusive_sum(inputs: Tensor, packed_info: Tensor) -> Tensor:
    """inputs: [n_samples], packed_info: [n_rays, 2] → [n_samples]."""
    return _packed_scan(inputs, packed_info, "sum", exclusive=False)


def exclusive_sum(inputs: Tensor, packed_info: Tensor) -> Tensor:
    """inputs: [n_samples], packed_info: [n_rays, 2] → [n_samples]."""
    return _packed_scan(inputs, packed_info, "sum", exclusive=True)


def inclusive_prod(inputs: Tensor, packed_info: Tensor) -> Tensor:
    """inputs: [n_samples], packed_info: [n_rays, 2] → [n_samples]."""
    return _packed_scan(inputs, packed_info, "prod", exclusive=False)


def exclusive_prod(inputs: Tensor, packed_info: Tensor) -> Tensor:
    """inputs: [n_samples], packed_info: [n_rays, 2] → [n_samples]."""
    return _packed_scan(inputs, packed_info, "prod", exclusive=True)


def render_weight_from_alpha_cpu(alphas: Tensor, ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """Stand-in for ``nerfacc.render_weight_from_alpha`` (flattened). alphas: [n_samples] → (weights, trans)."""
    trans = exclusive_prod(1.0 - alphas, pack_info(ray_indices, n_rays))
    return trans * alphas, trans


@torch.no_grad()
def render_visibility_from_alpha_cpu(alphas: Tensor, ray_indices: Tensor, n_rays: int,
                                     early_stop_eps: float = 1e-4, alpha_thre: float = 0.0) -> Tensor:
    """Stand-in for ``nerfacc.render_visibility_from_alpha``: bool [n_samples]."""
    trans = exclusive_prod(1.0 - alphas, pack_info(ray_indices, n_rays))
    vis = trans >= early_stop_eps
    if alpha_thre > 0:
        vis &= alphas >= alpha_thre
    return vis


@torch.no_grad()
def ray_aabb_intersect(rays_o: Tensor, rays_d: Tensor, aabbs: Tensor, near_plane: float = -float("inf"),
                       far_plane: float = float("inf"), miss_value: float = float("inf")):
    """Stand-in for ``nerfacc.ray_aabb_intersect``.

    rays_o, rays_d: [n_rays, 3]; aabbs: [m, 6] → (t_mins [n_rays, m], t_maxs [n_rays, m], hits bool [n_rays, m]).
    """
    t1 = (aabbs[None, :, :3] - rays_o[:, None]) / rays_d[:, None]
    t2 = (aabbs[None, :, 3:] - rays_o[:, None]) / rays_d[:, None]
    t_mins = torch.minimum(t1, t2).amax(-1)
    t_maxs = torch.maximum(t1, t2).amin(-1)
    hits = (t_maxs > t_mins) & (t_maxs > 0)
    t_mins = t_mins.clamp(near_plane, far_plane)
    t_maxs = t_maxs.clamp(near_plane, far_plane)
    miss = torch.full_like(t_mins, miss_value)
    return torch.where(hits, t_mins, miss), torch.where(hits, t_maxs, miss), hits


def _occupied(binaries: Tensor, aabb: Tensor, x: Tensor) -> Tensor:
    """Level-0 occupancy at points. binaries: bool [rx, ry, rz]; aabb: [6]; x: [..., 3] → bool [...]."""
    res = torch.tensor(binaries.shape, device=x.device)
    u = (x - aabb[:3]) / (aabb[3:] - aabb[:3])
    inside = ((u >= 0) & (u < 1)).all(-1)
    ijk = torch.minimum((u.clamp(0, 1) * res).long(), res - 1)
    return binaries[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & inside


@torch.no_grad()
def occ_grid_sampling_cpu(estimator: nerfacc.OccGridEstimator, rays_o: Tensor, rays_d: Tensor,
                          alpha_fn: Optional[Callable] = None, near_plane: float = 0.0, far_plane: float = 1e10,
                          render_step_size: float = 1e-3, early_stop_eps: float = 1e-4, alpha_thre: float = 0.0,
                          stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Stand-in for ``OccGridEstimator.sampling`` (single level, cone_angle 0).

    March every ray from its AABB entry in steps of ``render_step_size`` and keep the
    intervals whose midpoint falls in an occupied cell, then (like nerfacc) drop samples
    behind an opaque prefix (transmittance < ``early_stop_eps``) or below ``alpha_thre``,
    evaluating ``alpha_fn`` front to back in chunks so occluded samples cost nothing.
    rays_o, rays_d: [n_rays, 3] → (ray_indices [n], t_starts [n], t_ends [n]), packed by ray.
    """
    if estimator.levels != 1:
        raise ValueError("the CPU occupancy sampler supports levels=1 only")
    aabb = estimator.aabbs[0]
    t_min, t_max, hits = ray_aabb_intersect(rays_o, rays_d, aabb[None])
    near = torch.where(hits[:, 0], t_min[:, 0].clamp(min=near_plane), torch.zeros_like(t_min[:, 0]))
    far = torch.where(hits[:, 0], t_max[:, 0].clamp(max=far_plane), torch.zeros_like(t_max[:, 0]))
    if stratified:
        near = near + torch.rand_like(near) * render_step_size
    n_steps = int(torch.ceil(((far - near).clamp(min=0) / render_step_size).max()).item()) if len(near) else 0
    k = torch.arange(n_steps, device=rays_o.device, dtype=rays_o.dtype)
    t0 = near[:, None] + k * render_step_size  # [n_rays, n_steps]
    t1 = t0 + render_step_size
    mid = rays_o[:, None] + rays_d[:, None] * ((t0 + t1) / 2)[..., None]
    keep = (t1 <= far[:, None]) & _occupied(estimator.binaries[0], aabb, mid)
    if alpha_fn is not None and (alpha_thre > 0 or early_stop_eps > 0):
        alpha_thre = min(alpha_thre, estimator.occs.mean().item())
        keep = _visible_in_chunks(keep, t0, t1, alpha_fn, early_stop_eps, alpha_thre)
    ray_indices = torch.arange(len(rays_o), device=rays_o.device)[:, None].expand_as(t0)[keep]
    return ray_indices, t0[keep], t1[keep]


def _visible_in_chunks(keep: Tensor, t0: Tensor, t1: Tensor, alpha_fn: Callable, early_stop_eps: float,
                       alpha_thre: float, chunk: int = 16) -> Tensor:
    """Early ray termination as nerfacc's kernel does it: evaluate opacity ``chunk`` occupied
    samples at a time, front to back, only for rays still transparent enough, and keep the
    samples whose transmittance ≥ ``early_stop_eps`` (and opacity ≥ ``alpha_thre``).

    keep, t0, t1: [n_rays, n_steps] → visible bool [n_rays, n_steps].
    """
    n_rays = keep.shape[0]
    ri = torch.arange(n_rays, device=keep.device)[:, None].expand_as(keep)[keep]  # packed by ray
    rank = (torch.cumsum(keep, 1) - 1)[keep] // chunk
    s0, s1 = t0[keep], t1[keep]
    count = keep.sum(1)
    vis = torch.zeros_like(s0, dtype=torch.bool)
    log_trans = torch.zeros(n_rays, device=t0.device, dtype=t0.dtype)
    alive = count > 0
    c = 0
    while bool(alive.any()):
        sel = (rank == c) & alive[ri]
        r = ri[sel]
        alphas = alpha_fn(s0[sel], s1[sel], r)
        trans = log_trans.exp()[r] * exclusive_prod(1.0 - alphas, pack_info(r, n_rays))
        v = trans >= early_stop_eps
        if alpha_thre > 0:
            v &= alphas >= alpha_thre
        vis[sel] = v
        log_trans = log_trans.index_add(0, r, torch.log1p(-alphas.clamp(max=1 - 1e-7)))
        c += 1
        alive = alive & (log_trans.exp() >= early_stop_eps) & (count > c * chunk)
    visible = torch.zeros_like(keep)
    visible[keep] = vis
    return visible


# --- selection ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RayOps:
    """The ray-marching ops for one device, chosen once (``select_ops``).

    name: "nerfacc-cuda" (nerfacc's kernels) or "torch-cpu" (the stand-ins above).
    """

    name: str
    render_weight_from_alpha: Callable  # (alphas [n], ray_indices [n], n_rays) -> (weights [n], trans [n])
    sampling: Callable  # (estimator, rays_o, rays_d, alpha_fn=..., ...) -> (ray_indices, t_starts, t_ends)
    ray_aabb_intersect: Callable  # (rays_o, rays_d, aabbs [m, 6]) -> (t_mins, t_maxs, hits)
    #: pure torch in nerfacc: the same function on every device.
    accumulate_along_rays: Callable = nerfacc.accumulate_along_rays


def _cuda_weights(alphas: Tensor, ray_indices: Tensor, n_rays: int):
    return nerfacc.render_weight_from_alpha(alphas, ray_indices=ray_indices, n_rays=n_rays)


def _cuda_sampling(estimator, rays_o, rays_d, **kwargs):
    return estimator.sampling(rays_o, rays_d, **kwargs)


def select_ops(device: str | torch.device) -> RayOps:
    """nerfacc's CUDA kernels on a CUDA device, the pure-torch stand-ins otherwise (logged once)."""
    if torch.device(device).type == "cuda":
        if not os.environ.get("TORCH_EXTENSIONS_DIR"):
            log.warning("TORCH_EXTENSIONS_DIR is not set: nerfacc will JIT-build its CUDA ops into "
                        "torch's default cache (minutes, once)")
        ops = RayOps("nerfacc-cuda", _cuda_weights, _cuda_sampling, nerfacc.ray_aabb_intersect)
    else:
        ops = RayOps("torch-cpu", render_weight_from_alpha_cpu, occ_grid_sampling_cpu, ray_aabb_intersect)
    log.info("ray marching backend: %s (nerfacc %s)", ops.name, nerfacc.__version__)
    return ops
