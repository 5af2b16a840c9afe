"""Parity of the CPU stand-ins (recon/_nerfacc_backend.py) with nerfacc's pure-torch batched paths."""
from __future__ import annotations

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
