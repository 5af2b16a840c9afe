"""NeuS volume rendering through nerfacc, and the training loop.

Rendering (NeuS §3.3, discrete form Eq. 13): nerfacc's occupancy grid gives each ray the
intervals [t_i, t_{i+1}] in occupied cells; the SDF is evaluated once per interval *edge*
(adjacent intervals share one), the section opacity is α_i = (Φ_s(f_i) − Φ_s(f_{i+1})) /
Φ_s(f_i), and weights / colours are accumulated with nerfacc's volrend functions. No SDF
gradient is needed to render, so the only double evaluation is the eikonal term on a small
subset of points, computed with finite differences (Neuralangelo §3.1).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._nerfacc_backend import RayOps
from .errors import ReconCancelled, ReconError
from .fields import NeuSField, neus_alpha

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeuSConfig:
    """Training of the NeuS field (normalised units: the scene box is [-1, 1]³)."""

    steps: int = 1000
    """Optimisation steps."""
    batch_rays: int = 1024
    """Rays per step."""
    lr: float = 1e-2
    """Adam learning rate of the tri-planes and MLPs (decays ×0.1 over the run)."""
    lr_inv_s: float = 1e-2
    """Adam learning rate of log(s)."""
    render_step_size: float = 0.01
    """Ray-marching step (normalised units)."""
    occ_update_every: int = 16
    """Refresh the occupancy grid from the field every this many steps (0: never)."""
    occ_threshold: float = 0.01
    """Opacity below which a cell counts as empty."""
    early_stop_eps: float = 1e-3
    """Drop samples behind a transmittance below this (0: keep all)."""
    start_levels: int = 2
    """Encoding levels active at step 0 (coarse-to-fine, Neuralangelo §3.2)."""
    full_levels_at: float = 0.5
    """Fraction of the run after which all levels are active."""
    eikonal_weight: float = 0.1
    """Weight of the eikonal term (‖∇f‖ = 1, NeuS Eq. 15)."""
    eikonal_points: int = 512
    """Points per step for the eikonal term."""
    mask_weight: float = 0.1
    """Weight of the mask (opacity vs alpha channel) BCE term (NeuS §3.4 'with mask')."""


@dataclass
class RenderOut:
    """rgb [n, 3], opacity [n], edge_points [m, 3] (for the eikonal term), n_samples."""

    rgb: Tensor
    opacity: Tensor
    edge_points: Tensor
    n_samples: int


def _edge_layout(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, step: float):
    """Shared edges of packed intervals: (start_idx [n], end_idx [n], edge_t [m], edge_ray [m])."""
    n = t_starts.shape[0]
    run_end = torch.ones(n, dtype=torch.bool, device=t_starts.device)
    if n > 1:
        run_end[:-1] = (ray_indices[1:] != ray_indices[:-1]) | ((t_starts[1:] - t_ends[:-1]).abs() > 1e-3 * step)
    before = torch.cumsum(run_end.long(), 0) - run_end.long()
    start_idx = torch.arange(n, device=t_starts.device) + before
    end_idx = start_idx + 1
    m = n + int(run_end.sum())
    edge_t = t_starts.new_empty(m)
    edge_ray = ray_indices.new_empty(m)
    edge_t[end_idx[run_end]] = t_ends[run_end]
    edge_ray[end_idx] = ray_indices
    edge_t[start_idx], edge_ray[start_idx] = t_starts, ray_indices
    return start_idx, end_idx, edge_t, edge_ray


def render_rays(field: NeuSField, estimator, ops: RayOps, rays_o: Tensor, rays_d: Tensor, step: float,
                bg: Tensor, stratified: bool = False, early_stop_eps: float = 1e-3) -> RenderOut:
    """Volume-render rays through the NeuS field.

    rays_o, rays_d: [n, 3] normalised; bg: [n, 3] or [3] background colour.
    """
    n_rays = rays_o.shape[0]
    inv_s = field.inv_s

    def alpha_fn(t0: Tensor, t1: Tensor, ri: Tensor) -> Tensor:
        start_idx, end_idx, edge_t, edge_ray = _edge_layout(ri.long(), t0, t1, step)
        sdf = field.sdf(rays_o[edge_ray] + rays_d[edge_ray] * edge_t[:, None])
        return neus_alpha(sdf[start_idx], sdf[end_idx], inv_s.detach())

    ray_indices, t_starts, t_ends = ops.sampling(
        estimator, rays_o, rays_d, alpha_fn=alpha_fn if early_stop_eps > 0 else None, near_plane=0.0,
        render_step_size=step, early_stop_eps=early_stop_eps, alpha_thre=0.0, stratified=stratified)
    ray_indices = ray_indices.long()
    start_idx, end_idx, edge_t, edge_ray = _edge_layout(ray_indices, t_starts, t_ends, step)
    x_edge = rays_o[edge_ray] + rays_d[edge_ray] * edge_t[:, None]
    sdf, feat = field.geometry(x_edge)
    alphas = neus_alpha(sdf[start_idx], sdf[end_idx], inv_s)
    x_mid = (x_edge[start_idx] + x_edge[end_idx]) / 2
    rgbs = field.colour(x_mid, (feat[start_idx] + feat[end_idx]) / 2)
    weights, _ = ops.render_weight_from_alpha(alphas, ray_indices, n_rays)
    rgb = ops.accumulate_along_rays(weights, rgbs, ray_indices, n_rays)
    opacity = ops.accumulate_along_rays(weights, None, ray_indices, n_rays)[:, 0]
    return RenderOut(rgb + bg * (1 - opacity[:, None]), opacity, x_edge.detach(), int(t_starts.shape[0]))


def occupancy_fn(field: NeuSField, step: float) -> Callable[[Tensor], Tensor]:
    """Opacity of one marching step centred at x, for nerfacc's occupancy updates: x [n, 3] → [n, 1]."""
    def fn(x: Tensor) -> Tensor:
        sdf = torch.cat([field.sdf(c) for c in x.split(65536)])
        return neus_alpha(sdf + step / 2, sdf - step / 2, field.inv_s)[:, None]
    return fn


def _active_levels(cfg: NeuSConfig, n_levels: int, step: int) -> int:
    ramp = max(1.0, cfg.full_levels_at * cfg.steps)
    return min(n_levels, cfg.start_levels + math.ceil((n_levels - cfg.start_levels) * step / ramp))


def _eikonal(field: NeuSField, edge_points: Tensor, cfg: NeuSConfig, gen: torch.Generator, eps: float) -> Tensor:
    """Eikonal term on half near-surface points (rendered edges), half uniform in the box."""
    k = cfg.eikonal_points // 2
    near = edge_points[torch.randint(len(edge_points), (k,), generator=gen)] if len(edge_points) else edge_points
    uniform = torch.rand(cfg.eikonal_points - len(near), 3, generator=gen) * 2 - 1
    pts = torch.cat([near, uniform.to(edge_points.device)])
    grad = field.sdf_gradient(pts, eps)
    return ((grad.norm(dim=-1) - 1) ** 2).mean()


def train(field: NeuSField, estimator, ops: RayOps, rays: tuple[Tensor, Tensor, Tensor, Tensor], cfg: NeuSConfig,
          seed: int, progress: Callable[[int, int, str], None] | None = None,
          should_stop: Callable[[], bool] | None = None, update_occupancy: bool = True) -> dict:
    """Optimise ``field`` in place; returns stats. Raises ReconCancelled / ReconError (non-finite loss)."""
    o_all, d_all, rgb_all, mask_all = rays
    device = next(field.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    groups = [{"params": list(field.encoding.parameters()), "lr": cfg.lr},
              {"params": list(field.sdf_net.parameters()) + list(field.colour_net.parameters()), "lr": cfg.lr},
              {"params": [field.log_inv_s], "lr": cfg.lr_inv_s}]
    opt = torch.optim.Adam(groups, eps=1e-15)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** (s / max(cfg.steps, 1)))
    occ_fn = occupancy_fn(field, cfg.render_step_size)
    t0, samples, last_loss = time.perf_counter(), 0, float("nan")
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            raise ReconCancelled()
        levels = _active_levels(cfg, field.encoding.n_levels, step)
        field.encoding.set_active_levels(levels)
        idx = torch.randint(len(o_all), (cfg.batch_rays,), generator=gen)
        o, d = o_all[idx].to(device), d_all[idx].to(device)
        bg = torch.rand(len(idx), 3, generator=gen).to(device)
        mask = mask_all[idx].to(device)
        target = rgb_all[idx].to(device) * mask[:, None] + bg * (1 - mask[:, None])
        out = render_rays(field, estimator, ops, o, d, cfg.render_step_size, bg, stratified=True,
                          early_stop_eps=cfg.early_stop_eps)
        loss = F.l1_loss(out.rgb, target)
        # BCE written out: F.binary_cross_entropy raises on NaN instead of propagating it
        opa = out.opacity.clamp(1e-4, 1 - 1e-4)
        loss = loss - cfg.mask_weight * (mask * opa.log() + (1 - mask) * (1 - opa).log()).mean()
        eps = max(2.0 / float(field.encoding.resolutions[levels - 1]), 1e-3)
        loss = loss + cfg.eikonal_weight * _eikonal(field, out.edge_points, cfg, gen, eps)
        if not torch.isfinite(loss):
            raise ReconError(f"NeuS optimisation diverged: non-finite loss at step {step} (try a lower lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        samples += out.n_samples
        last_loss = float(loss.detach())
        if update_occupancy and cfg.occ_update_every and (step + 1) % cfg.occ_update_every == 0:
            estimator.train()
            estimator.update_every_n_steps(step, occ_fn, occ_thre=cfg.occ_threshold, warmup_steps=0, n=1)
        if progress is not None and (step % 25 == 0 or step == cfg.steps - 1):
            progress(step + 1, cfg.steps, f"neus loss {last_loss:.4f} s={float(field.inv_s.detach()):.0f}")
    for p in field.parameters():
        if not torch.isfinite(p).all():
            raise ReconError("NeuS optimisation produced non-finite parameters")
    seconds = time.perf_counter() - t0
    log.info("NeuS: %d steps in %.1f s, %.1f samples/ray, loss %.4f, s=%.0f", cfg.steps, seconds,
             samples / max(cfg.steps * cfg.batch_rays, 1), last_loss, float(field.inv_s.detach()))
    return {"train_seconds": seconds, "samples_per_ray": samples / max(cfg.steps * cfg.batch_rays, 1),
            "final_loss": last_loss, "inv_s": float(field.inv_s.detach())}


@torch.no_grad()
def render_image(field: NeuSField, estimator, ops: RayOps, rays_o: Tensor, rays_d: Tensor, step: float,
                 bg: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Render many rays in chunks: (rgb [n, 3], opacity [n])."""
    rgbs, opas = [], []
    for o, d in zip(rays_o.split(chunk), rays_d.split(chunk)):
        out = render_rays(field, estimator, ops, o, d, step, bg, stratified=False)
        rgbs.append(out.rgb)
        opas.append(out.opacity)
    return torch.cat(rgbs), torch.cat(opas)
