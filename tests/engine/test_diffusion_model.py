"""The joint multi-view model on tiny seeded configurations (CPU): coupling and invariances."""
from __future__ import annotations

import os

import pytest
import torch

from engine.multiview.diffusion.pipeline import _Conditions
from engine.multiview.diffusion.presets import tiny_pipeline
from engine.multiview.diffusion.unet import unet_forward
from engine.multiview.layouts import gen3dface

from .diffusion_fixtures import TINY_SIZE, TINY_VIEWS, tiny_inputs

torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


def _conditions(pipe, vertices=None) -> tuple[_Conditions, torch.Tensor]:
    crop, cam, verts, faces = tiny_inputs()
    rgb = pipe.preprocess(crop)
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    cond = pipe.prepare_conditions(rgb, cam, verts if vertices is None else vertices, cams, None)
    latents = torch.randn(TINY_VIEWS, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return cond, latents


def _noise(pipe, cond, latents, t=500, guidance=1.0):
    pipe.scheduler.set_timesteps(2)
    return pipe.predict_noise(latents, torch.tensor(t), cond, guidance, chunk=2)


def test_unet_walk_equals_diffusers_forward():
    """With identity depth blocks and per-view attention, our layer walk is diffusers' forward."""
    pipe = tiny_pipeline(joint_attention=False)
    for block in [pipe.conditioner.middle_conditions, *pipe.conditioner.output_conditions]:
        torch.nn.init.zeros_(block.proj_out[-1].weight)
    x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500, 900])
    ctx = torch.randn(3, 1, 32, generator=torch.Generator().manual_seed(1))
    vol = {r: torch.randn(3, pipe.conditioner.config.frustum_dims[i], 8 >> i, r, r) for i, r in enumerate((8, 4, 2, 1))}
    with torch.no_grad():
        ours = unet_forward(pipe.unet, pipe.conditioner, x, t, ctx, vol, n_views=3)
        ref = pipe.unet(x, t, encoder_hidden_states=ctx, cross_attention_kwargs={"n_views": 1}).sample
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_views_are_coupled_by_attention_and_volume_and_not_without():
    """Changing view 0's latent moves view 2's prediction; with joint attention and the
    shared volume both off the views are independent."""
    for overrides, coupled in [({}, True), ({"use_mesh_volume": False}, True),
                               ({"joint_attention": False}, True),
                               ({"joint_attention": False, "use_mesh_volume": False}, False)]:
        pipe = tiny_pipeline(**overrides)
        cond, latents = _conditions(pipe)
        base = _noise(pipe, cond, latents)
        changed = latents.clone()
        changed[0] += 1.0
        other = _noise(pipe, cond, changed)
        diff0 = (other[0] - base[0]).abs().max().item()
        diff2 = (other[2] - base[2]).abs().max().item()
        assert diff0 > 1e-3, overrides
        if coupled:
            assert diff2 > 1e-5, (overrides, diff2)
        else:
            assert diff2 < 1e-6, (overrides, diff2)


@torch.no_grad()
def test_permuting_views_permutes_outputs():
    """Joint attention and the view-averaged mesh volume are equivariant to the view order."""
    pipe = tiny_pipeline()
    crop, cam, verts, faces = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    lat = torch.randn(TINY_VIEWS, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    perm = [2, 0, 3, 1]
    a = pipe(crop, cam, verts, faces, cams, num_inference_steps=2, latents=lat, output_type="latent").latents
    b = pipe(crop, cam, verts, faces, [cams[i] for i in perm], num_inference_steps=2, latents=lat[perm], output_type="latent").latents
    torch.testing.assert_close(b, a[perm], atol=1e-4, rtol=1e-4)
    assert (a[0] - a[1]).abs().max() > 1e-3  # views differ, so the check is not vacuous


@torch.no_grad()
def test_mesh_volume_influences_the_prediction():
    pipe = tiny_pipeline()
    cond, latents = _conditions(pipe)
    _, _, verts, _ = tiny_inputs()
    cond2, _ = _conditions(pipe, vertices=verts * 1.4 + [0.03, 0.0, 0.0])
    assert (_noise(pipe, cond, latents) - _noise(pipe, cond2, latents)).abs().max() > 1e-4
    off = tiny_pipeline(use_mesh_volume=False)
    c1, _ = _conditions(off)
    c2, _ = _conditions(off, vertices=verts * 1.4)
    torch.testing.assert_close(_noise(off, c1, latents), _noise(off, c2, latents))


def _unconditional(pipe, cond, latents, t=500):
    """SyncDreamer's unconditional branch, built here from its definition: zero context, zero
    input-view latent and concatenated latent, and an explicit all-zero frustum volume."""
    cm, n, s = pipe.conditioner, cond.n_targets, cond.c2w.shape[0]
    t_views = torch.cat([torch.full((n,), t), torch.zeros(s - n, dtype=torch.long)])
    t_emb = cm.embed_time(t_views)
    volume = cm.build_volume(latents, t_emb[:1], cond.v_embed[:n], cond.c2w[:n], cond.intr[:n], TINY_SIZE, cond.vertices, 2)
    frustum = cm.frustum_features(volume, t_emb, cond.v_embed, cond.c2w, cond.intr, TINY_SIZE, 2, cond.frustum_points)
    zero_volume = {k: torch.zeros((s, *v.shape[1:]), dtype=v.dtype) for k, v in frustum.items()}
    c = cond.input_latent.shape[1]
    x = torch.cat([latents, torch.zeros(s - n, c, 8, 8)])
    x = torch.cat([x, torch.zeros(s, c, 8, 8)], 1)
    return unet_forward(pipe.unet, cm, x, t_views, torch.zeros_like(cond.context), zero_volume, s)[:n]


@torch.no_grad()
def test_guidance_is_the_cfg_combination_of_the_two_branches():
    """ε̂ = ε_u + g·(ε_c − ε_u), with ε_c the guidance-1 prediction and ε_u computed independently."""
    pipe = tiny_pipeline()
    cond, latents = _conditions(pipe)
    eps_c = _noise(pipe, cond, latents, guidance=1.0)
    eps_u = _unconditional(pipe, cond, latents)
    assert eps_c.shape == (TINY_VIEWS, 4, 8, 8)
    assert (eps_c - eps_u).abs().max() > 1e-3  # the branches differ, so the check is not vacuous
    for g in (0.0, 2.0, 3.5):
        expected = eps_u + g * (eps_c - eps_u)
        torch.testing.assert_close(_noise(pipe, cond, latents, guidance=g), expected, atol=1e-5, rtol=1e-4)


def test_spatial_volume_needs_its_view_count():
    pipe = tiny_pipeline(use_spatial_volume=True, spatial_dims=(8, 16, 16, 16))
    crop, cam, verts, faces = tiny_inputs()
    with pytest.raises(ValueError, match="views"):
        pipe.check_inputs(crop, verts, faces, gen3dface(TINY_VIEWS + 1).cameras(TINY_SIZE))
    out = pipe(crop, cam, verts, faces, gen3dface(TINY_VIEWS).cameras(TINY_SIZE), num_inference_steps=1, output_type="latent")
    assert torch.isfinite(out.latents).all()
