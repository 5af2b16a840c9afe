"""Parity of the CPU stand-ins (recon/_nerfacc_backend.py) with nerfacc's pure-torch batched paths."""
from __future__ import annotations

import logging
import sys

import nerfacc
import pytest
import torch
from nerfacc.grid import _query, _ray_aabb_intersect

from recon import _nerfacc_backend as B


def _packed(batch: torch.Tensor, cnts: torch.Tensor):
    """Flatten the first cnts[i] entries of each row: (flat [n], ray_indices [n], packed_info [n_rays, 2])."""
    rows = [batch[i, : int(c)] for i, c in enumerate(cnts)]
    ray_indices = torch.repeat_interleave(torch.arange(len(cnts)), cnts)
    return torch.cat(rows), ray_indices, B.pack_info(ray_indices, len(cnts))


def test_pack_info_matches_nerfacc_example():
    ray_indices = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    assert B.pack_info(ray_indices, 4).tolist() == [[0, 2], [2, 3], [5, 4], [9, 0]]


@pytest.mark.parametrize("name", ["inclusive_sum", "exclusive_sum", "inclusive_prod", "exclusive_prod"])
def test_scans_match_batched_nerfacc(name):
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(6, 9, generator=g, dtype=torch.float64)
    batch[2, 3] = 0.0  # a zero inside a product: gradients must stay right
    cnts = torch.tensor([9, 0, 5, 1, 9, 3])
    flat, _, info = _packed(batch, cnts)
    flat.requires_grad_(True)
    ours = getattr(B, name)(flat, info)
    ref_batch = batch.clone().requires_grad_(True)
    ref = getattr(nerfacc, name)(ref_batch)  # batched: pure torch in nerfacc
    ref_flat, _, _ = _packed(ref, cnts)
    assert torch.allclose(ours, ref_flat)
    weights = torch.rand(len(flat), generator=g, dtype=torch.float64)
    (ours * weights).sum().backward()
    w_batch = torch.zeros_like(batch)
    w_batch[torch.arange(9)[None] < cnts[:, None]] = weights  # same layout, zeros in padding
    (ref * w_batch).sum().backward()
    ref_grad, _, _ = _packed(ref_batch.grad, cnts)
    assert torch.allclose(flat.grad, ref_grad)


def test_render_weight_and_accumulate_match_batched():
    g = torch.Generator().manual_seed(1)
    alphas = torch.rand(5, 7, generator=g, dtype=torch.float64)
    rgb = torch.rand(5, 7, 3, generator=g, dtype=torch.float64)
    cnts = torch.full((5,), 7)
    flat, ray_indices, _ = _packed(alphas, cnts)
    flat.requires_grad_(True)
    w, trans = B.render_weight_from_alpha_cpu(flat, ray_indices, 5)
    ref_alphas = alphas.clone().requires_grad_(True)
    w_ref, trans_ref = nerfacc.render_weight_from_alpha(ref_alphas)
    assert torch.allclose(w, w_ref.flatten()) and torch.allclose(trans, trans_ref.flatten())
    ops = B.select_ops("cpu")
    colour = ops.accumulate_along_rays(w, rgb.reshape(-1, 3), ray_indices, 5)
    colour_ref = nerfacc.accumulate_along_rays(w_ref, rgb)
    assert torch.allclose(colour, colour_ref)
    colour.sum().backward()
    colour_ref.sum().backward()
    assert torch.allclose(flat.grad, ref_alphas.grad.flatten())


def test_visibility_matches_batched():
    g = torch.Generator().manual_seed(2)
    alphas = torch.rand(8, 6, generator=g)
    flat, ray_indices, _ = _packed(alphas, torch.full((8,), 6))
    ours = B.render_visibility_from_alpha_cpu(flat, ray_indices, 8, early_stop_eps=0.2, alpha_thre=0.3)
    ref = nerfacc.render_visibility_from_alpha(alphas, early_stop_eps=0.2, alpha_thre=0.3)
    assert torch.equal(ours, ref.flatten())


def test_ray_aabb_intersect_matches_nerfacc_torch_path():
    g = torch.Generator().manual_seed(3)
    rays_o = torch.randn(64, 3, generator=g) * 2
    rays_d = torch.nn.functional.normalize(torch.randn(64, 3, generator=g), dim=-1)
    aabbs = torch.tensor([[-1.0, -1, -1, 1, 1, 1], [0, 0, 0, 0.5, 0.7, 0.9]])
    ours = B.ray_aabb_intersect(rays_o, rays_d, aabbs, near_plane=0.0, far_plane=5.0)
    ref = _ray_aabb_intersect(rays_o, rays_d, aabbs, near_plane=0.0, far_plane=5.0)
    assert ours[2].any() and (~ours[2]).any()
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_occ_grid_sampling_keeps_occupied_midpoints():
    torch.manual_seed(0)
    est = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1, -1, 1, 1, 1], resolution=16, levels=1)
    centres = (est.grid_coords.float() + 0.5) / 16 * 2 - 1
    est.binaries = (centres.norm(dim=-1) < 0.6).reshape(1, 16, 16, 16)
    rays_o = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 0.9], [2.0, 2.0, 2.0]])
    rays_d = torch.nn.functional.normalize(torch.tensor([[0.0, 1, 0], [0.0, 1, 0], [1.0, 1, 1]]), dim=-1)
    ray_indices, t0, t1 = B.occ_grid_sampling_cpu(est, rays_o, rays_d, render_step_size=0.02)
    assert set(ray_indices.tolist()) == {0}  # ray 1 misses the ball, ray 2 points away
    mids = rays_o[ray_indices] + rays_d[ray_indices] * ((t0 + t1) / 2)[:, None]
    occ, _ = _query(mids, est.binaries.float(), est.aabbs[0])
    assert bool((occ > 0).all())
    assert torch.all(ray_indices[1:] >= ray_indices[:-1])
    # the ball's chord (~1.2 long, voxelised) is covered by ~60 contiguous steps of 0.02
    assert 50 <= len(t0) <= 75 and torch.allclose(t1 - t0, torch.full_like(t0, 0.02))
    # early stop: opaque samples hide everything behind the first one
    _, t0s, _ = B.occ_grid_sampling_cpu(est, rays_o, rays_d, render_step_size=0.02, early_stop_eps=0.5,
                                        alpha_fn=lambda a, b, r: torch.ones_like(a))
    assert len(t0s) == 1 and t0s[0] == t0[0]


def test_selection_and_no_jit_build_on_cpu():
    ops = B.select_ops("cpu")
    assert ops.name == "torch-cpu" and ops.accumulate_along_rays is nerfacc.accumulate_along_rays
    assert "nerfacc.cuda._backend" not in sys.modules  # nothing tried to compile _C


# -- added for the mutation run (scripts/mutation.sh sampling) --------------------------------------

def test_select_ops_names_each_backends_functions(monkeypatch, caplog):
    """The choice only builds the table (no CUDA call), so both branches run on a CPU machine."""
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    with caplog.at_level(logging.INFO, logger="recon._nerfacc_backend"):
        gpu = B.select_ops("cuda")
    assert (gpu.name, gpu.render_weight_from_alpha, gpu.sampling, gpu.ray_aabb_intersect) == (
        "nerfacc-cuda", B._cuda_weights, B._cuda_sampling, nerfacc.ray_aabb_intersect)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "TORCH_EXTENSIONS_DIR is not set: nerfacc will JIT-build its CUDA ops into torch's default "
                    "cache (minutes, once)"),
        ("INFO", f"ray marching backend: nerfacc-cuda (nerfacc {nerfacc.__version__})")]
    caplog.clear()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/tmp/torch-ext")
    with caplog.at_level(logging.INFO, logger="recon._nerfacc_backend"):
        assert B.select_ops(torch.device("cuda", 0)).name == "nerfacc-cuda"
        cpu = B.select_ops("cpu")
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]  # the build cache is set: no warning
    assert caplog.records[-1].getMessage() == f"ray marching backend: torch-cpu (nerfacc {nerfacc.__version__})"
    assert (cpu.render_weight_from_alpha, cpu.sampling, cpu.ray_aabb_intersect) == (
        B.render_weight_from_alpha_cpu, B.occ_grid_sampling_cpu, B.ray_aabb_intersect)


def test_scans_of_single_sample_rays():
    one = torch.tensor([0.3])
    info = B.pack_info(torch.tensor([0]), 1)
    assert B.exclusive_sum(one, info).tolist() == [0.0] and B.exclusive_prod(one, info).tolist() == [1.0]
    assert torch.equal(B.inclusive_sum(one, info), one) and torch.equal(B.inclusive_prod(one, info), one)
    assert B.exclusive_sum(torch.zeros(0), B.pack_info(torch.zeros(0, dtype=torch.long), 2)).shape == (0,)


def test_occupied_cells_at_the_box_faces():
    """A point is in the grid for 0 ≤ u < 1 (u: position in the box, per axis), in the cell floor(u·res)."""
    binaries = torch.zeros(4, 4, 4, dtype=torch.bool)
    binaries[0] = binaries[3] = True  # first and last x layers
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    x = torch.tensor([[-1.0, 0.1, 0.1],  # u = 0: the first cell
                      [0.9, 0.1, 0.1],  # the last cell
                      [1.0, 0.1, 0.1],  # u = 1: outside
                      [1.5, 0.1, 0.1],  # outside, beyond the last (occupied) cell
                      [-7.0, 0.1, 0.1],  # far outside on the low side
                      [0.1, 0.1, 0.1],  # an empty cell
                      [-0.9, 1.2, 0.1]])  # y outside
    assert B._occupied(binaries, aabb, x).tolist() == [True, True, False, False, False, False, False]


def _reference_visibility(alphas, ray_of, eps, thre):
    """Front to back per ray: transmittance = ∏(1 − α) of the earlier samples; visible when ≥ eps and α ≥ thre."""
    vis, trans = [], {}
    for a, r in zip(alphas.tolist(), ray_of.tolist()):
        t = trans.get(r, 1.0)
        vis.append(t >= eps and (thre <= 0 or a >= thre))
        trans[r] = t * (1 - a)
    return vis


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_visible_in_chunks_matches_front_to_back_transmittance(dtype):
    """Rays of 40, 16, 15, 1 and 0 occupied samples (chunks of 16), one turning opaque in its second
    chunk, one whose transmittance lands exactly on early_stop_eps, alphas exactly on alpha_thre."""
    n_steps = 48
    keep = torch.zeros(6, n_steps, dtype=torch.bool)
    keep[0, 2:42] = True  # 40 transparent samples
    keep[1, :16] = True
    keep[2, 5:20] = True
    keep[3, 30] = True
    keep[5, :40] = True  # opaque at its 20th sample
    t0 = torch.arange(n_steps, dtype=dtype).expand(6, n_steps) * 0.1
    t1 = t0 + 0.1
    alpha_of = torch.full((6, n_steps), 0.01, dtype=dtype)
    alpha_of[1, 0] = 0.5  # transmittance exactly 0.5 behind it
    alpha_of[2, 5::2] = 0.25  # exactly the threshold of the second case
    alpha_of[5, 21] = 0.999
    alpha_of[5, 30] = 0.6  # above alpha_thre but hidden behind the opaque sample
    ray_of = torch.arange(6)[:, None].expand_as(keep)[keep]

    def alpha_fn(s0, s1, r):
        assert s0.dtype == dtype and torch.all(r[1:] >= r[:-1])  # packed by ray
        return alpha_of[r, (s0 / 0.1).round().long()]

    for eps, thre in [(0.5, 0.0), (1e-3, 0.25), (0.2, 0.0)]:
        vis = B._visible_in_chunks(keep, t0, t1, alpha_fn, eps, thre)
        ref = _reference_visibility(alpha_of[keep], ray_of, eps, thre)
        assert vis[keep].tolist() == ref, (eps, thre)
        assert not vis[~keep].any()
    assert sum(ref) > 40  # most samples are visible in the last case
