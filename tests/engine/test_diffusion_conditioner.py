"""The multi-view conditioner's parts on a tiny float64 configuration (no UNet, fast).

Expected values: SyncDreamer's layout of the conditioned decoder layers written out by hand,
ldm's sinusoidal time embedding computed here, and properties that hold for any weights
(chunking changes nothing, a view's features depend on its own latent only, the fused volume
is the sum of its parts), and the mesh volume's two resamplings checked on linear fields, whose
trilinear samples are known by hand.
"""
from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch

from engine.multiview.diffusion import geometry
from engine.multiview.diffusion.conditioner import MultiViewConditioner, condition_slots, view_chunks
from engine.multiview.diffusion.presets import tiny_conditioner_config
from engine.multiview.layouts import gen3dface

from .diffusion_fixtures import TINY_SIZE, tiny_inputs

torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))

LATENT = TINY_SIZE // 8


def _conditioner(**overrides) -> MultiViewConditioner:
    torch.manual_seed(0)
    cm = MultiViewConditioner(tiny_conditioner_config(**overrides), latent=LATENT).double().eval()
    with torch.no_grad():  # zero-initialised layers random, so that every part does something
        for p in cm.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn_like(p) * 0.05)
    return cm


def _cameras(n: int):
    cams = gen3dface(n).cameras(TINY_SIZE)
    return geometry.camera_tensors(cams, torch.device("cpu"))


def _inputs(n: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 4, LATENT, LATENT, generator=g, dtype=torch.float64)
    v_embed = torch.randn(n, 4, generator=g, dtype=torch.float64)
    c2w, intr = _cameras(n)
    return latents, v_embed, c2w.double(), intr.double()


def test_condition_slots_follow_syncdreamer_for_sd15():
    """SD-1.5 (4 up blocks, 2 layers + 1): every decoder layer but the lowest-resolution block's,
    the upsampling layer at twice its block's resolution."""
    got = condition_slots((320, 640, 1280, 1280), 2, 32)
    assert got == [(1, 0, 1280, 8), (1, 1, 1280, 8), (1, 2, 1280, 16),
                   (2, 0, 640, 16), (2, 1, 640, 16), (2, 2, 640, 32),
                   (3, 0, 320, 32), (3, 1, 320, 32), (3, 2, 320, 32)]
    assert condition_slots((32, 64), 1, 8) == [(1, 0, 32, 8), (1, 1, 32, 8)]


def test_view_chunks_of_one():
    assert [(s.start, s.stop) for s in view_chunks(3, 1)] == [(0, 1), (1, 2), (2, 3)]
    assert [(s.start, s.stop) for s in view_chunks(3, 0)] == [(0, 1), (1, 2), (2, 3)]  # at least one per chunk


def test_sizes_must_be_multiples_of_eight():
    cfg = tiny_conditioner_config()
    for latent, depth in [(12, 8), (8, 12)]:
        with pytest.raises(ValueError, match=r"^latent size and frustum_depth must be multiples of 8 \(FrustumTV3DNet has 3 stride-2 levels\)$"):
            MultiViewConditioner(dataclasses.replace(cfg, frustum_depth=depth), latent=latent)


def test_depth_blocks_sit_at_their_resolution_level():
    """Four UNet levels at latent 32: the middle block works at 32 / 8 = 4, i.e. frustum level 3."""
    cfg = tiny_conditioner_config(unet_block_out_channels=(8, 16, 32, 48), frustum_dims=(8, 16, 24, 32), joint_gate_layers=3)
    cm = MultiViewConditioner(cfg, latent=32)
    mid = cm.middle_conditions
    assert mid.proj_in[0].in_channels == 48 and mid.proj_context[0].in_channels == 32
    assert mid.proj_in[0].out_channels == cfg.depth_heads * (32 // 2)
    slots = condition_slots(cfg.unet_block_out_channels, cfg.unet_layers_per_block, 32)
    assert len(cm.output_conditions) == len(slots)
    for block, (_, _, ch, res) in zip(cm.output_conditions, slots):
        d = cfg.frustum_dims[int(math.log2(32 // res))]
        assert (block.proj_in[0].in_channels, block.proj_context[0].in_channels) == (ch, d)
    assert isinstance(cm.joint_gates, torch.nn.Parameter) and cm.joint_gates.shape == (3,) and not cm.joint_gates.any()
    assert not hasattr(_conditioner(), "joint_gates")
    # three levels at latent 32: the middle block at 32 / 4 = 8, frustum level 2
    three = MultiViewConditioner(tiny_conditioner_config(unet_block_out_channels=(8, 16, 48), frustum_dims=(8, 16, 24, 32)), latent=32)
    assert three.middle_conditions.proj_context[0].in_channels == 24


@torch.no_grad()
def test_identity_token_is_the_views_token_plus_the_projected_embedding():
    """Context with the identity token: [view token, view token + W·e], W bias-free and zero at start."""
    fresh = MultiViewConditioner(tiny_conditioner_config(identity_dim=16), latent=LATENT)
    assert fresh.identity_projection.weight.shape == (32, 16) and not fresh.identity_projection.weight.any()
    assert fresh.identity_projection.bias is None
    cm = _conditioner(identity_dim=16)
    proj = cm.identity_projection
    g = torch.Generator().manual_seed(2)
    clip = torch.randn(32, generator=g, dtype=torch.float64)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64)
    e = torch.randn(1, 16, generator=g)  # float32 [1, 16], as the face embedder gives it
    base = cm.cc_projection(torch.cat([clip.expand(3, -1), v], -1))[:, None]  # the view's own token
    with torch.no_grad():
        proj.weight.zero_()
    at_zero = cm.context(clip, v, e)
    assert at_zero.shape == (3, 2, 32) and at_zero.dtype == torch.float64
    torch.testing.assert_close(at_zero, torch.cat([base, base], 1), atol=1e-15, rtol=0)
    with torch.no_grad():
        proj.weight.normal_(0, 0.3, generator=g)
    got = cm.context(clip, v, e)
    shift = proj.weight @ e[0].double()
    torch.testing.assert_close(got[:, 0], base[:, 0], atol=1e-15, rtol=0)
    torch.testing.assert_close(got[:, 1], base[:, 0] + shift, atol=1e-6, rtol=0)
    assert shift.abs().max() > 0.1
    # no face: a zero embedding, the token duplicates the view's own
    torch.testing.assert_close(cm.context(clip, v, None), torch.cat([base, base], 1), atol=1e-15, rtol=0)


@torch.no_grad()
def test_time_embedding_is_ldm_sinusoid_then_mlp():
    cm = _conditioner()
    t = torch.tensor([0, 7, 500, 999])
    half = cm.config.time_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    arg = t[:, None].double() * freqs[None]
    sinusoid = torch.cat([torch.cos(arg), torch.sin(arg)], -1)  # cos first
    lin1, act, lin2 = cm.time_embed
    assert isinstance(act, torch.nn.SiLU)
    expected = lin2(torch.nn.functional.silu(lin1(sinusoid)))
    torch.testing.assert_close(cm.embed_time(t), expected, atol=1e-6, rtol=1e-6)
    assert cm.embed_time(t).dtype == torch.float64


@torch.no_grad()
def test_context_is_the_projection_of_clip_and_view():
    cm = _conditioner()
    g = torch.Generator().manual_seed(1)
    clip = torch.randn(32, generator=g, dtype=torch.float64)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():  # not the pass-through start (the identity there equals "no projection")
        cm.cc_projection.weight.normal_(0, 0.2, generator=g)
        cm.cc_projection.bias.normal_(0, 0.2, generator=g)
    ctx = cm.context(clip, v)
    assert ctx.shape == (3, 1, 32)
    w, b = cm.cc_projection.weight, cm.cc_projection.bias
    for i in range(3):
        torch.testing.assert_close(ctx[i, 0], w @ torch.cat([clip, v[i]]) + b)
    plain = _conditioner(use_cc_projection=False)
    torch.testing.assert_close(plain.context(clip, v), clip.expand(3, 1, 32))


@torch.no_grad()
def test_unproject_is_per_view_and_independent_of_chunking():
    cm = _conditioner()
    latents, v_embed, c2w, intr = _inputs(5)
    t_emb = cm.embed_time(torch.tensor([300]))
    whole = cm.unproject(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, 5)
    v = cm.config.volume_size
    assert whole.shape == (5, cm.config.encoder_dim, v, v, v) and whole.dtype == torch.float64
    assert whole.abs().max() > 1e-3
    for chunk in (1, 2):
        torch.testing.assert_close(cm.unproject(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, chunk), whole)
    changed = latents.clone()
    changed[3] += 1.0
    diff = (cm.unproject(changed, t_emb, v_embed, c2w, intr, TINY_SIZE, 2) - whole).abs().flatten(1).amax(1)
    assert diff[3] > 1e-3 and diff[[0, 1, 2, 4]].max() == 0  # only view 3's features move


@torch.no_grad()
def test_fused_volume_is_the_sum_of_mesh_and_spatial_volumes():
    cfg = dict(use_spatial_volume=True, n_views=5, spatial_dims=(8, 16, 16, 16))
    cm = _conditioner(**cfg)
    latents, v_embed, c2w, intr = _inputs(5)
    _, _, verts, _ = tiny_inputs()
    verts = torch.as_tensor(verts, dtype=torch.float64)
    t_emb = cm.embed_time(torch.tensor([300]))  # the targets' time (the pipeline passes one row)
    feats = cm.unproject(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, 2)
    v = cm.config.volume_size
    mesh = cm.mesh_volume(feats, verts)
    dense = cm.spatial_volume.spatial_volume_feats(feats.reshape(1, -1, v, v, v), t_emb)
    assert mesh.abs().max() > 1e-9 and dense.abs().max() > 1e-4  # both parts contribute
    exact = dict(atol=1e-13, rtol=0)
    torch.testing.assert_close(cm.build_volume(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, verts, 2), mesh + dense, **exact)
    torch.testing.assert_close(cm.build_volume(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, None, 2), dense, **exact)
    spatial_only = _conditioner(use_mesh_volume=False, **cfg)
    feats = spatial_only.unproject(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, 2)
    torch.testing.assert_close(spatial_only.build_volume(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, verts, 2),
                               spatial_only.spatial_volume.spatial_volume_feats(feats.reshape(1, -1, v, v, v), t_emb))
    mesh_only = _conditioner(n_views=5)
    assert mesh_only.build_volume(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, None, 2) is None  # no vertices: no volume
    neither = _conditioner(use_mesh_volume=False)
    assert neither.build_volume(latents, t_emb, v_embed, c2w, intr, TINY_SIZE, verts, 2) is None


@torch.no_grad()
def test_frustum_features_chunking_points_and_zero_volume():
    cm = _conditioner(n_views=5)
    latents, v_embed, c2w, intr = _inputs(5)
    _, _, verts, _ = tiny_inputs()
    t_emb = cm.embed_time(torch.tensor([300, 300, 300, 300, 0]))
    volume = cm.build_volume(latents, t_emb[:1], v_embed, c2w, intr, TINY_SIZE, torch.as_tensor(verts, dtype=torch.float64), 2)
    points = cm.frustum_points(c2w, intr, TINY_SIZE)
    assert points.shape == (5, cm.config.frustum_depth, LATENT, LATENT, 3)
    ref = cm.frustum_features(volume, t_emb, v_embed, c2w, intr, TINY_SIZE, 5, points)
    assert sorted(ref) == [1, 2, 4, 8] and ref[8].shape[0] == 5
    for chunk, pts in [(2, points), (1, None), (5, None)]:
        got = cm.frustum_features(volume, t_emb, v_embed, c2w, intr, TINY_SIZE, chunk, pts)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k])
    # no volume: the same as an explicit all-zero volume
    zero = cm.frustum_features(torch.zeros_like(volume), t_emb, v_embed, c2w, intr, TINY_SIZE, 2, points)
    none = cm.frustum_features(None, t_emb, v_embed, c2w, intr, TINY_SIZE, 2, points)
    for k in ref:
        torch.testing.assert_close(none[k], zero[k])
        assert (none[k] - ref[k]).abs().max() > 1e-4


def _linear_field(points: torch.Tensor) -> torch.Tensor:
    """Channels that are linear in (x, y, z) [..., 3] → [..., 8]: trilinear sampling of such a
    field reproduces it exactly wherever the sample lies inside the grid."""
    x, y, z = points.unbind(-1)
    one = torch.ones_like(x)
    return torch.stack([x, y, z, x - 2 * y, 3 * z + y, 0.5 * one, x + y + z, one], -1)


@pytest.mark.parametrize("rule", ["neuralbody", "morphable"])
@torch.no_grad()
def test_mesh_volume_samples_at_the_vertices_and_resamples_the_voxel_grid_at_the_volume_points(rule):
    """``mesh_volume``'s two resamplings, each against a hand-computed position.

    1. The views' features are sampled at the mesh vertices: features that are linear in the world
       position of the V³ grid must come back as that linear function of each vertex (any other
       ``align_corners`` or grid scale puts the sample elsewhere), view by view.
    2. The sparse net's dense output [1, C', D', H', W'] (replaced by its own cell indices via a
       forward hook) is read back at the volume points: the origin is 4 voxels below the vertices'
       minimum (neuralbody; morphable: at the minimum), the voxel grid is ``shape`` voxels and its /4
       output has D' cells, so a point p lands at index ((p − origin) / voxel) / shape · (D' − 1) per axis
       (Morphable Diffusion's normalisation with ``align_corners=True``).
    """
    cm = _conditioner(voxelisation=rule)
    cfg, net = cm.config, cm.spatial_volume
    n, c, v = 2, cfg.encoder_dim, cfg.volume_size
    assert c == 8
    g = torch.Generator().manual_seed(3)
    # vertices inside the volume, each in its own voxel (≥ 2 voxels apart on a lattice), spread wider
    # in x than in y and z so that the voxel grid is not a cube (64 × 32 × 32 voxels)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(4.0, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    spacing = torch.tensor([0.18, 0.05, 0.05], dtype=torch.float64)
    verts = (lattice - 1.5) * spacing + torch.rand(lattice.shape, generator=g, dtype=torch.float64) * 0.01
    verts = verts + torch.tensor([-0.005, -0.02, 0.01], dtype=torch.float64)
    assert verts.abs().max() < cfg.volume_length
    grid_world = geometry.volume_points(v, cfg.volume_length, dtype=torch.float64)  # [z, y, x] → (x, y, z)
    field = _linear_field(grid_world).permute(3, 0, 1, 2)  # [C, V, V, V]
    view_feats = torch.stack([field, 2 * field + 1])  # two views, each its own field

    seen = {}
    net.smpl_feature_extractor.register_forward_pre_hook(lambda m, args: seen.__setitem__("at_verts", args[0].clone()))
    net.xyzc_net.register_forward_pre_hook(lambda m, args: seen.__setitem__("voxels", args[0]))

    def dense_indices(module, args, out):  # the dense grid's own (x, y, z) cell index in channels 0-2
        d, h, w = out.shape[2:]
        zz, yy, xx = torch.meshgrid(*(torch.arange(k, dtype=out.dtype) for k in (d, h, w)), indexing="ij")
        idx = torch.zeros_like(out)
        idx[0, 0], idx[0, 1], idx[0, 2] = xx, yy, zz
        seen["dense_shape"] = (d, h, w)
        return idx

    net.xyzc_net.register_forward_hook(dense_indices)
    out = cm.mesh_volume(view_feats, verts)

    # 1. the samples at the vertices: the linear function of each vertex, per view
    lin = _linear_field(verts).T  # [C, P]
    torch.testing.assert_close(seen["at_verts"], torch.stack([lin, 2 * lin + 1]), atol=1e-12, rtol=0)
    # the fused per-vertex features reach the voxeliser, one voxel per vertex, each at its vertex's cell
    voxels = seen["voxels"]
    w0, b0 = net.smpl_feature_extractor.conv0.weight[:, :, 0], net.smpl_feature_extractor.conv0.bias
    fused = ((w0 @ lin + b0[:, None]) + (w0 @ (2 * lin + 1) + b0[:, None])) / 2  # mean over the views, [C, P]
    if rule == "neuralbody":
        origin = verts.min(0).values - 4 * cfg.voxel_size
        cell_zyx = torch.floor((verts - origin) / cfg.voxel_size).long().flip(-1)
        voxels_xyz, cells_xyz = [64, 32, 32], [16, 8, 8]  # span + 8 voxels, up to a multiple of 32
    else:
        origin = verts.min(0).values
        cell_zyx = torch.round((verts - origin) / cfg.voxel_size).long().flip(-1)
        voxels_xyz, cells_xyz = [32, 12, 12], [8, 3, 3]  # (ceil(span / voxel) | 3) + 1
    assert voxels.coords.shape[0] == len(verts)
    for p in range(len(verts)):
        row = (voxels.coords[:, 1:] == cell_zyx[p]).all(1)
        assert row.sum() == 1
        torch.testing.assert_close(voxels.feats[row][0], fused[:, p], atol=1e-12, rtol=0)

    # 2. the dense grid read back at the volume points
    shape_xyz = torch.tensor(voxels.shape[::-1], dtype=torch.float64)
    out_xyz = torch.tensor(seen["dense_shape"][::-1], dtype=torch.float64)
    assert shape_xyz.tolist() == voxels_xyz and out_xyz.tolist() == cells_xyz  # (x, y, z), /4 by the net
    expect = (grid_world - origin) / cfg.voxel_size / shape_xyz * (out_xyz - 1)  # [V, V, V, 3] cell index
    inside = ((expect >= 0) & (expect <= out_xyz - 1)).all(-1)
    assert out.shape[0] == 1 and out.shape[2:] == (v, v, v)
    assert 20 < inside.sum() < v ** 3  # some volume points in the grid, some outside it
    got = out[0, :3].permute(1, 2, 3, 0)  # [V, V, V, 3]
    torch.testing.assert_close(got[inside], expect[inside], atol=1e-12, rtol=0)
    assert not out[0, 3:].any()

    # float32 features with float64 vertices: each grid is cast to its input's dtype, the same result
    out32 = cm.float().mesh_volume(view_feats.float(), verts)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, atol=1e-5, rtol=0)
