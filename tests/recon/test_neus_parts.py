"""recon.neus at toy sizes: rendering against a per-ray loop written from NeuS's formulas, the
occupancy opacity, the level schedule, the eikonal term, and the training loop's contract
(progress, cancel, divergence, determinism, which parameters each learning rate moves, the
loss it reports, the samples per ray and the time it reports and logs, the check of the
parameters after the last step), the stratified jitter and the edge layout of one or two
intervals."""
from __future__ import annotations

import logging
import math
import re
import time

import pytest
import torch
import torch.nn.functional as F

from recon._nerfacc_backend import select_ops
from recon.errors import ReconCancelled, ReconError
from recon.fields import FieldConfig, NeuSField
from recon.neus import NeuSConfig, _active_levels, _edge_layout, _eikonal, occupancy_fn, render_rays, train
from recon.sampling import full_estimator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPS = select_ops("cpu")
TOY = FieldConfig(plane_resolutions=(8, 16), hidden=16, geo_features=4, sphere_radius=0.5, init_inv_s=40.0)


def _field(seed=0, **kw):
    torch.manual_seed(seed)
    field = NeuSField(FieldConfig(**(TOY.__dict__ | kw)))
    with torch.no_grad():  # features that vary along a ray, and a residual SDF that is not zero
        for p in field.encoding.planes:
            p.normal_(0, 0.5)
        field.sdf_net[2].weight[0].normal_(0, 0.05)
    return field


def _rays():
    o = torch.tensor([[0.0, -3.0, 0.0], [0.1, -3.0, 0.3], [0.0, -3.0, 0.9], [-3.0, 0.2, 0.1]])
    d = F.normalize(torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.05], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), dim=-1)
    return o, d


def _reference(field, o, d, ri, t0, t1, bg):
    """NeuS Eq. 13 and alpha compositing, one ray at a time with Python loops."""
    s = float(field.inv_s)
    rgb, opacity = [], []
    for r in range(len(o)):
        acc, trans, colour = 0.0, 1.0, torch.zeros(3, dtype=torch.float64)
        for a, b in zip(t0[ri == r].tolist(), t1[ri == r].tolist()):
            pa, pb = o[r] + a * d[r], o[r] + b * d[r]
            (fa, fb), feat = field.geometry(torch.stack([pa, pb]))
            ca, cb = 1 / (1 + math.exp(-s * float(fa))), 1 / (1 + math.exp(-s * float(fb)))
            alpha = min(max((ca - cb) / (ca + 1e-5), 0.0), 1.0)
            c = field.colour(((pa + pb) / 2)[None], feat.mean(0, keepdim=True))[0]
            colour += trans * alpha * c.double()
            acc += trans * alpha
            trans *= 1 - alpha
        rgb.append(colour + bg.double() * (1 - acc))
        opacity.append(acc)
    return torch.stack(rgb), torch.tensor(opacity, dtype=torch.float64)


def test_render_rays_matches_a_per_ray_loop():
    field, est = _field(), full_estimator(8, "cpu")
    o, d = _rays()
    bg = torch.tensor([0.2, 0.9, 0.4])
    with torch.no_grad():
        out = render_rays(field, est, OPS, o, d, 0.05, bg, early_stop_eps=0.0)
        ri, t0, t1 = OPS.sampling(est, o, d, render_step_size=0.05, early_stop_eps=0.0)
        rgb, opacity = _reference(field, o, d, ri, t0, t1, bg)
    assert out.n_samples == len(t0) > 100
    assert torch.allclose(out.opacity.double(), opacity, atol=1e-5)
    assert torch.allclose(out.rgb.double(), rgb, atol=1e-5)
    assert opacity[0] > 0.99 and opacity[2] < 0.01  # through the sphere / past it
    assert not torch.allclose(out.rgb[0], bg, atol=0.05)  # a hit shows the surface, not the background
    ends = torch.cat([o[ri] + d[ri] * t0[:, None], o[ri] + d[ri] * t1[:, None]])
    assert len(out.edge_points) == len(t0) + 4  # four contiguous runs: one shared edge per interval, plus one
    assert torch.cdist(out.edge_points, ends).min(1).values.max() < 1e-3  # float32 sums of t


def test_render_rays_early_stop_drops_exactly_the_hidden_samples():
    field, est = _field(init_inv_s=400.0), full_estimator(8, "cpu")
    o, d = _rays()
    with torch.no_grad():
        full = render_rays(field, est, OPS, o, d, 0.05, torch.zeros(3), early_stop_eps=0.0)
        ri, t0, t1 = OPS.sampling(est, o, d, render_step_size=0.05, early_stop_eps=0.0)
        stopped = render_rays(field, est, OPS, o, d, 0.05, torch.zeros(3), early_stop_eps=0.05)
    s = float(field.inv_s)
    kept = 0
    for r in range(len(o)):  # transmittance in front of each sample ≥ 0.05 (hand loop)
        trans = 1.0
        for a, b in zip(t0[ri == r].tolist(), t1[ri == r].tolist()):
            fa, fb = field.sdf(torch.stack([o[r] + a * d[r], o[r] + b * d[r]])).tolist()
            ca, cb = 1 / (1 + math.exp(-s * fa)), 1 / (1 + math.exp(-s * fb))
            if trans >= 0.05:
                kept += 1
            trans *= 1 - min(max((ca - cb) / (ca + 1e-5), 0.0), 1.0)
    assert stopped.n_samples == kept < full.n_samples
    assert torch.allclose(stopped.opacity, full.opacity, atol=0.06)


def test_render_rays_gradients_reach_the_sdf_and_s():
    """The photometric loss shapes the surface: gradients flow through the alphas into the SDF
    network and into s (a detached SDF or s would leave them zero)."""
    field, est = _field(), full_estimator(8, "cpu")
    o, d = _rays()
    out = render_rays(field, est, OPS, o, d, 0.05, torch.zeros(3), stratified=False)
    (out.rgb.sum() + out.opacity.sum()).backward()
    assert float(field.log_inv_s.grad.abs()) > 0
    assert float(field.sdf_net[2].weight.grad[0].abs().sum()) > 0  # the SDF output's row
    assert float(field.colour_net[2].weight.grad.abs().sum()) > 0
    assert not out.edge_points.requires_grad


def test_occupancy_fn_is_the_opacity_of_one_step():
    field = NeuSField(FieldConfig(plane_resolutions=(4,), hidden=8, sphere_radius=0.5, init_inv_s=20.0))
    fn = occupancy_fn(field, 0.1)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.9, 0.0]])
    with torch.no_grad():
        got = fn(x)
    sig = lambda v: 1 / (1 + math.exp(-20.0 * v))  # noqa: E731
    expected = [max((sig(f + 0.05) - sig(f - 0.05)) / (sig(f + 0.05) + 1e-5), 0) for f in (-0.5, 0.0, 0.4)]
    assert got.shape == (3, 1)
    assert torch.allclose(got[:, 0], torch.tensor(expected), atol=1e-5)
    assert got[1, 0] > 0.5 > got[2, 0]  # a step across the surface is opaque, one outside is not


@pytest.mark.parametrize("steps, at, start, levels, expected", [
    (10, 0.5, 2, 4, [2, 3, 3, 4, 4, 4, 4, 4, 4, 4]),  # ramp of 5 steps: 2 + ceil(2·k/5)
    (4, 0.0, 1, 3, [1, 3, 3, 3]),  # no ramp: everything from step 1
    (6, 1.0, 1, 2, [1, 2, 2, 2, 2, 2]),
])
def test_active_levels_schedule(steps, at, start, levels, expected):
    cfg = NeuSConfig(steps=steps, full_levels_at=at, start_levels=start)
    assert [_active_levels(cfg, levels, k) for k in range(steps)] == expected


class _Recording(NeuSField):
    def sdf_gradient(self, x, eps):
        self.seen = (x.detach().clone(), eps)
        return super().sdf_gradient(x, eps)


def test_eikonal_term_of_a_linear_sdf_and_its_points():
    r = 5
    axis = torch.linspace(-1, 1, r)
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    field = _Recording(FieldConfig(plane_resolutions=(4,), hidden=8), prior_sdf=2 * gx + 3 * gy - gz)
    edges = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.2, 0.0]])
    cfg = NeuSConfig(eikonal_points=7)
    loss = _eikonal(field, edges, cfg, torch.Generator().manual_seed(0), 1e-3)
    assert float(loss) == pytest.approx((math.sqrt(14) - 1) ** 2, rel=0.01)  # |∇f| = √14 everywhere
    pts, eps = field.seen
    assert eps == 1e-3 and pts.shape == (7, 3)
    assert all(any(torch.equal(p, e) for e in edges) for p in pts[:3])  # half near the surface
    assert not any(any(torch.equal(p, e) for e in edges) for p in pts[3:])  # the rest uniform
    assert bool((pts.abs() <= 1).all()) and float(pts[3:].std()) > 0.2
    _eikonal(field, torch.zeros(0, 3), cfg, torch.Generator().manual_seed(0), 1e-3)
    assert field.seen[0].shape == (7, 3)  # no rendered points: all uniform


def _toy_rays(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = F.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3
    d = F.normalize(-o + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    mask = (closest < 0.4).float()
    rgb = torch.tensor([0.8, 0.3, 0.1]).expand(n, 3).clone()
    return o, d, rgb, mask


TRAIN = dict(batch_rays=32, render_step_size=0.05, eikonal_points=16, occ_update_every=0)


def test_train_reports_progress_and_stats():
    field, est = _field(), full_estimator(8, "cpu")
    calls, levels = [], []

    def progress(k, n, msg):
        calls.append((k, n, msg.split()[0:2]))
        levels.append(field.encoding.n_active)

    cheap = TRAIN | {"batch_rays": 8, "render_step_size": 0.2, "eikonal_points": 4}
    stats = train(field, est, OPS, _toy_rays(), NeuSConfig(steps=27, start_levels=1, **cheap), seed=0,
                  progress=progress)
    assert [c[:2] for c in calls] == [(1, 27), (26, 27), (27, 27)]  # every 25 steps and the last
    assert all(c[2] == ["neus", "loss"] for c in calls)
    assert levels == [1, 2, 2]  # coarse to fine
    assert set(stats) == {"train_seconds", "samples_per_ray", "final_loss", "inv_s"}
    assert stats["train_seconds"] > 0 and math.isfinite(stats["final_loss"]) and stats["final_loss"] > 0
    assert stats["inv_s"] == pytest.approx(float(field.inv_s))
    assert 1 < stats["samples_per_ray"] < 6 / 0.2  # a ray crosses at most the box's diagonal


def test_train_reports_the_loss_it_optimised():
    """One step at zero learning rates: the reported loss is L1 + mask BCE + eikonal, recomputed
    here from the same random draws."""
    rays = _toy_rays()
    cfg = NeuSConfig(steps=1, lr=0.0, lr_inv_s=0.0, mask_weight=0.3, eikonal_weight=0.2, early_stop_eps=0.0,
                     start_levels=2, **TRAIN)
    field, est = _field(), full_estimator(8, "cpu")
    before = [p.detach().clone() for p in field.parameters()]
    torch.manual_seed(7)
    stats = train(field, est, OPS, rays, cfg, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, field.parameters()))  # lr 0: nothing moved
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(len(rays[0]), (32,), generator=gen)
    bg = torch.rand(32, 3, generator=gen)
    torch.manual_seed(7)
    with torch.no_grad():
        out = render_rays(field, est, OPS, rays[0][idx], rays[1][idx], 0.05, bg, stratified=True, early_stop_eps=0.0)
        mask = rays[3][idx]
        target = rays[2][idx] * mask[:, None] + bg * (1 - mask[:, None])
        opa = out.opacity.clamp(1e-4, 1 - 1e-4)
        bce = -(mask * torch.log(opa) + (1 - mask) * torch.log(1 - opa)).mean()
        near = out.edge_points[torch.randint(len(out.edge_points), (8,), generator=gen)]
        pts = torch.cat([near, torch.rand(8, 3, generator=gen) * 2 - 1])
        eps = 2.0 / 16  # the finest active level's resolution
        grad = torch.stack([(field.sdf(pts + eps * e) - field.sdf(pts - eps * e)) / (2 * eps) for e in torch.eye(3)], -1)
        eik = ((grad.norm(dim=-1) - 1) ** 2).mean()
        expected = (out.rgb - target).abs().mean() + 0.3 * bce + 0.2 * eik
    assert stats["final_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert mask.sum() > 0 and (1 - mask).sum() > 0


def test_each_learning_rate_moves_its_own_parameters():
    rays = _toy_rays()
    field = _field()
    planes = [p.detach().clone() for p in field.encoding.planes]
    s0 = float(field.log_inv_s)
    train(field, full_estimator(8, "cpu"), OPS, rays, NeuSConfig(steps=2, lr=0.0, lr_inv_s=0.1, **TRAIN), seed=0)
    assert float(field.log_inv_s) != s0 and all(torch.equal(a, b) for a, b in zip(planes, field.encoding.planes))
    field = _field()
    w = field.sdf_net[0].weight.detach().clone()
    train(field, full_estimator(8, "cpu"), OPS, rays, NeuSConfig(steps=2, lr=1e-2, lr_inv_s=0.0, **TRAIN), seed=0)
    assert float(field.log_inv_s) == s0 and not torch.equal(w, field.sdf_net[0].weight)
    assert not all(torch.equal(a, b) for a, b in zip(planes, field.encoding.planes))


def test_train_is_deterministic_for_a_seed():
    rays = _toy_rays()

    def params(seed):
        field = _field()
        torch.manual_seed(0)  # the stratified jitter draws from torch's global generator
        train(field, full_estimator(8, "cpu"), OPS, rays, NeuSConfig(steps=3, **TRAIN), seed=seed)
        return torch.cat([p.detach().flatten() for p in field.parameters()])

    assert torch.equal(params(1), params(1)) and not torch.equal(params(1), params(2))


def test_training_lowers_the_photometric_loss():
    field, est = _field(), full_estimator(8, "cpu")
    losses = []
    train(field, est, OPS, _toy_rays(), NeuSConfig(steps=26, lr=5e-2, **TRAIN), seed=0,
          progress=lambda k, n, msg: losses.append(float(msg.split()[2])))
    assert losses[-1] < 0.8 * losses[0], losses


def test_cancel_divergence_and_occupancy_updates():
    rays = _toy_rays()
    asked = []
    with pytest.raises(ReconCancelled):
        train(_field(), full_estimator(8, "cpu"), OPS, rays, NeuSConfig(steps=5, **TRAIN), seed=0,
              should_stop=lambda: asked.append(1) or len(asked) > 2)
    assert len(asked) == 3  # asked before every step, stopped at the third
    with pytest.raises(ReconError, match="non-finite loss at step 1"):
        train(_field(), full_estimator(8, "cpu"), OPS, rays, NeuSConfig(steps=2, lr=float("inf"),
                                                                       **TRAIN), seed=0)
    cfg = NeuSConfig(steps=2, **(TRAIN | {"occ_update_every": 2}))
    est = full_estimator(8, "cpu")
    train(_field(), est, OPS, rays, cfg, seed=0)
    assert bool((est.occs < 1).any())  # refreshed from the field's opacity after step 2
    for kw in ({"update_occupancy": False}, {}):
        est = full_estimator(8, "cpu")
        c = cfg if kw else NeuSConfig(steps=2, **(TRAIN | {"occ_update_every": 3}))
        train(_field(), est, OPS, rays, c, seed=0, **kw)
        assert bool((est.occs == 1).all())


def _hand_sample_count(o, d, jitter, step):
    """Intervals of ``step`` from each ray's jittered entry into [-1, 1]³ that end before its exit
    (slab method; every cell occupied)."""
    with torch.no_grad():
        lo, hi = (-1 - o) / d, (1 - o) / d
        t_in = torch.minimum(lo, hi).max(-1).values.clamp(min=0).double()
        t_out = torch.maximum(lo, hi).min(-1).values.double()
    count = 0
    for a, b, j in zip(t_in.tolist(), t_out.tolist(), jitter.tolist()):
        if b > a:
            count += max(0, math.floor((b - (a + j * step)) / step + 1e-9))
    return count


@pytest.mark.parametrize("batch", [1, 32])
def test_train_samples_per_ray_seconds_and_log_line(batch, caplog):
    """One step: samples/ray is the number of intervals of the drawn rays, counted by hand from the
    same jitter draws, over the rays of the run; train_seconds lies within the call's wall time; the
    INFO line shows the steps, those figures, the loss and s."""
    rays = _toy_rays()
    cfg = NeuSConfig(steps=1, early_stop_eps=0.0, **(TRAIN | {"batch_rays": batch}))
    field, est = _field(), full_estimator(8, "cpu")
    torch.manual_seed(7)
    with caplog.at_level(logging.INFO, logger="recon.neus"):
        t = time.perf_counter()
        stats = train(field, est, OPS, rays, cfg, seed=3)
        wall = time.perf_counter() - t
    idx = torch.randint(len(rays[0]), (batch,), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    jitter = torch.rand(batch)  # the sampler's draw: one start offset per ray, in steps
    count = _hand_sample_count(rays[0][idx], rays[1][idx], jitter, 0.05)
    assert count > 0
    assert stats["samples_per_ray"] == pytest.approx(count / batch, rel=1e-9)
    assert 0 <= stats["train_seconds"] <= wall
    records = [r for r in caplog.records if r.name == "recon.neus"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    m = re.fullmatch(r"NeuS: (\d+) steps in (\d+\.\d) s, (\d+\.\d) samples/ray, loss (\d+\.\d{4}), s=(\d+)",
                     records[0].getMessage())
    assert m, records[0].getMessage()
    assert int(m[1]) == 1
    assert 0 <= float(m[2]) <= wall + 0.05
    assert float(m[3]) == pytest.approx(count / batch, abs=0.05)
    assert float(m[4]) == pytest.approx(stats["final_loss"], abs=5e-5) and 0 < float(m[4]) < 10
    assert int(m[5]) == round(float(field.inv_s.detach()))


def test_train_rejects_non_finite_parameters_after_the_last_step():
    """An infinite learning rate: the one step's loss is finite, the parameters it leaves are not."""
    field = _field()
    with pytest.raises(ReconError, match=r"^NeuS optimisation produced non-finite parameters$"):
        train(field, full_estimator(8, "cpu"), OPS, _toy_rays(), NeuSConfig(steps=1, lr=float("inf"), **TRAIN),
              seed=0)
    assert not all(bool(torch.isfinite(p).all()) for p in field.parameters())


def _first_offsets(out, o, d, t_entry):
    """Each ray's first rendered edge (the edge points on its line, nearest its origin), as t − t_entry."""
    offsets = []
    for r in range(len(o)):
        t = (out.edge_points - o[r]) @ d[r]
        off_line = (out.edge_points - o[r] - t[:, None] * d[r]).norm(dim=-1)
        offsets.append(float(t[off_line < 1e-4].min()) - t_entry[r])
    return torch.tensor(offsets)


def test_stratified_rendering_jitters_each_rays_start_within_one_step():
    field, est = _field(), full_estimator(8, "cpu")
    o, d = _rays()
    t_entry = [2.0, 2.0 / float(d[1, 1]), 2.0, 2.0]  # through y = -1 (rays 0-2) and x = -1 (ray 3)
    step = 0.05

    def offsets(stratified, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = render_rays(field, est, OPS, o, d, step, torch.zeros(3), stratified=stratified)
        return _first_offsets(out, o, d, t_entry)

    grid = offsets(False, 0)
    assert grid.abs().max() < 1e-5  # unjittered: every ray starts at its entry
    a, b = offsets(True, 0), offsets(True, 1)
    for jit in (a, b):
        assert bool(((jit >= -1e-5) & (jit < step)).all())  # within one step past the entry
        assert jit.max() > 1e-3 and len(set(jit.tolist())) == len(o)  # off the grid, one draw per ray
    assert (a - b).abs().max() > 1e-3  # another draw, other positions
    assert torch.equal(a, offsets(True, 0))


@pytest.mark.parametrize("ri, t0, runs", [
    ([0, 0], [0.2, 0.3], 1),  # two contiguous intervals share their middle edge
    ([0, 1], [0.2, 0.3], 2),  # two rays
    ([0, 0], [0.2, 0.5], 2),  # a gap on one ray
    ([3], [0.2], 1),
])
def test_edge_layout_of_one_and_two_intervals(ri, t0, runs):
    ri, t0 = torch.tensor(ri), torch.tensor(t0)
    t1 = t0 + 0.1
    start, end, edge_t, edge_ray = _edge_layout(ri, t0, t1, 0.1)
    assert len(edge_t) == len(t0) + runs
    assert torch.allclose(edge_t[start], t0) and torch.allclose(edge_t[end], t1)
    assert torch.equal(edge_ray[start], ri) and torch.equal(edge_ray[end], ri)
    assert (len(t0) == 2 and runs == 1) == (len(t0) == 2 and int(end[0]) == int(start[1]))
