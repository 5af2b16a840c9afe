"""The multi-view pipeline's steps one at a time on the tiny model (fast): input checks, the
crop's preprocessing, the input encoding, the per-view conditions, the concatenated latent,
decoding and alpha.

Expected values come from the components themselves called directly (the VAE, the conditioner,
``geometry``), pixel arithmetic done here, and the definitions in the docstrings.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pytest
import torch

from engine.multiview.diffusion import clip, frames, geometry
from engine.multiview.diffusion.presets import tiny_pipeline
from engine.multiview.diffusion.unet import unet_forward
from engine.multiview.layouts import gen3dface

from .diffusion_fixtures import TINY_SIZE, TINY_VIEWS, tiny_inputs

torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_check_inputs_accepts_the_limits_and_rejects_past_them(pipe):
    crop, _, verts, faces = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    ok = np.zeros((8, 9, 3), np.uint8)
    tri = np.array([[0, 1, 2]])
    for image in (ok, np.zeros((9, 8, 4), np.uint8)):
        pipe.check_inputs(image, verts[:3], tri, cams)  # 8 px, 3 vertices, the last vertex used
    pipe.check_inputs(crop, verts, np.zeros((0, 3), np.int64), cams)  # no faces is allowed
    for image in (np.zeros((7, 9, 3)), np.zeros((9, 7, 3)), np.zeros((8, 8, 2)), np.zeros((8, 8, 5)), np.zeros((8, 8))):
        with pytest.raises(ValueError, match=_exact(f"crop must be [h, w, 3|4], got {image.shape}")):
            pipe.check_inputs(image, verts, faces, cams)
    bad_nan = verts.copy()
    bad_nan[5, 1] = np.nan
    for v in (verts[:2], verts[:, :2], bad_nan, verts[None]):
        with pytest.raises(ValueError, match=_exact(f"prior vertices must be finite [V, 3], got {np.asarray(v).shape}")):
            pipe.check_inputs(crop, v, tri, cams)
    for f in (np.array([[0, 1, 3]]), np.array([[0, -1, 2]]), np.array([[0, 1, 2, 0]]), np.array([0, 1, 2])):
        with pytest.raises(ValueError, match=_exact("prior faces must be [F, 3] indices into the vertices")):
            pipe.check_inputs(crop, verts[:3], f, cams)
    with pytest.raises(ValueError, match=_exact("no target cameras")):
        pipe.check_inputs(crop, verts, faces, [])


def test_preprocess_scales_composites_on_white_and_clamps(pipe):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (TINY_SIZE, TINY_SIZE, 4)).astype(np.uint8)
    x = pipe.preprocess(rgba)
    assert x.shape == (1, 3, TINY_SIZE, TINY_SIZE) and x.dtype == torch.float32
    rgb, a = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    expected = rgb * a + (1 - a)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    floats = rng.uniform(-0.5, 1.5, (TINY_SIZE, TINY_SIZE, 3))
    np.testing.assert_allclose(pipe.preprocess(floats)[0].permute(1, 2, 0).numpy(), np.clip(floats, 0, 1), atol=1e-6)
    # 4× down: an antialiased triangle filter over 8 input columns; stripes 4 wide → 3/4 and 1/4
    stripes = np.zeros((4 * TINY_SIZE, 4 * TINY_SIZE, 3))
    stripes[:, (np.arange(4 * TINY_SIZE) // 4) % 2 == 0] = 1.0
    small = pipe.preprocess(stripes)[0, 0, TINY_SIZE // 2].numpy()
    np.testing.assert_allclose(small[2:-2], np.tile([0.75, 0.25], TINY_SIZE // 2)[2:-2], atol=1e-6)


def test_encode_input_is_the_vae_posterior_and_clip(pipe):
    rgb = pipe.preprocess(tiny_inputs()[0])
    dist = pipe.vae.encode(rgb * 2 - 1).latent_dist
    scale = pipe.vae.config.scaling_factor
    emb, z = pipe.encode_input(rgb, None)
    torch.testing.assert_close(z, dist.mode() * scale)
    torch.testing.assert_close(emb, clip.encode(pipe.image_encoder, rgb, pipe.conventions.clip_resize).reshape(-1))
    _, zs = pipe.encode_input(rgb, None, "sample", torch.Generator().manual_seed(4))
    torch.testing.assert_close(zs, dist.sample(torch.Generator().manual_seed(4)) * scale)
    assert (zs - z).abs().max() > 1e-3
    given = torch.randn(1, pipe.conditioner.config.clip_dim, dtype=torch.float64)
    emb2, _ = pipe.encode_input(rgb, given)
    assert emb2.shape == (pipe.conditioner.config.clip_dim,) and emb2.dtype == torch.float32
    torch.testing.assert_close(emb2, given.reshape(-1).float())
    blind = tiny_pipeline(with_clip=False)
    with pytest.raises(ValueError, match=_exact("no image encoder in this model: pass image_embeds")):
        blind.encode_input(rgb, None)


@pytest.mark.parametrize("family_like", [False, True])
def test_prepare_conditions_resizes_cameras_and_adds_the_input_view(pipe, family_like):
    """Targets given at twice the model's size; with the reference families' latent-index pixels
    the principal point moves by half a latent pixel and a constant view embedding is used."""
    p = pipe
    if family_like:
        p = tiny_pipeline()
        p.conventions = dataclasses.replace(p.conventions, pixel_convention="latent_index", view_embedding="constant",
                                            view_embedding_constant=(0.1, -0.2, 0.7, 0.3))
    crop, cam, verts, _ = tiny_inputs()
    rgb = p.preprocess(crop)
    big = gen3dface(TINY_VIEWS).cameras(2 * TINY_SIZE)
    cond = p.prepare_conditions(rgb, cam, verts, big, None, "sample", torch.Generator().manual_seed(2))
    views = [c.resized(TINY_SIZE, TINY_SIZE) for c in big] + [cam.resized(TINY_SIZE, TINY_SIZE)]
    c2w, intr = geometry.camera_tensors(views)
    offset = 0.5 * TINY_SIZE / p.conditioner.latent if family_like else 0.0
    intr[:, 2:] += offset
    assert cond.n_targets == TINY_VIEWS and cond.c2w.shape == (TINY_VIEWS + 1, 4, 4)
    torch.testing.assert_close(cond.c2w, c2w)
    torch.testing.assert_close(cond.intr, intr)
    own = (0.1, -0.2, 0.7, 0.3) if family_like else (0.0, 0.0, 1.0, 0.0)
    expected = frames.view_embeddings(p.conventions, views[:-1], views[-1], p.conditioner.config.elevation_sign,
                                      p.conditioner.config.azimuth_sign)
    torch.testing.assert_close(cond.v_embed, torch.cat([expected, torch.tensor([own], dtype=expected.dtype)]))
    assert cond.vertices.dtype == torch.float32
    torch.testing.assert_close(cond.vertices, torch.as_tensor(verts, dtype=torch.float32))
    clip_embed, latent = p.encode_input(rgb, None, "sample", torch.Generator().manual_seed(2))
    torch.testing.assert_close(cond.input_latent, latent)
    torch.testing.assert_close(cond.context, p.conditioner.context(clip_embed, cond.v_embed))
    torch.testing.assert_close(cond.frustum_points, p.conditioner.frustum_points(c2w, intr, TINY_SIZE))
    no_mesh = tiny_pipeline(use_mesh_volume=False).prepare_conditions(rgb, cam, verts, big, None)
    assert no_mesh.vertices is None


@torch.no_grad()
@pytest.mark.parametrize("unscaled", [True, False])
def test_conditional_branch_concatenates_the_input_latent(unscaled):
    """ε_c: the targets' noisy latents, the input view's clean latent, and the input latent
    concatenated to every view (divided by the VAE's scale for the reference families)."""
    p = tiny_pipeline(concat_unscaled=unscaled)
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    cond = p.prepare_conditions(p.preprocess(crop), cam, verts, cams, None)
    latents = torch.randn(TINY_VIEWS, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cm, n, s = p.conditioner, TINY_VIEWS, TINY_VIEWS + 1
    t_views = torch.tensor([500] * n + [0])
    t_emb = cm.embed_time(t_views)
    volume = cm.build_volume(latents, t_emb[:1], cond.v_embed[:n], cond.c2w[:n], cond.intr[:n], TINY_SIZE, cond.vertices, 2)
    frustum = cm.frustum_features(volume, t_emb, cond.v_embed, cond.c2w, cond.intr, TINY_SIZE, 2)
    concat = cond.input_latent / (p.vae.config.scaling_factor if unscaled else 1.0)
    x = torch.cat([torch.cat([latents, cond.input_latent]), concat.expand(s, -1, -1, -1)], 1)
    expected = unet_forward(p.unet, cm, x, t_views, cond.context, frustum, s)[:n]
    torch.testing.assert_close(p.predict_noise(latents, torch.tensor(500), cond, 1.0, 2), expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_decode_maps_the_vae_output_to_unit_range_chunk_by_chunk(pipe):
    latents = 4 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    raw = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    assert raw.min() < -1 and raw.max() > 1  # both clamps matter
    expected = (raw * 0.5 + 0.5).clamp(0, 1)
    for chunk in (1, 2, 3):
        torch.testing.assert_close(pipe.decode(latents, chunk), expected, atol=1e-5, rtol=1e-5)


def test_alpha_modes(pipe):
    _, _, verts, faces = tiny_inputs()
    cams = gen3dface(2).cameras(2 * TINY_SIZE)  # alpha resizes the cameras to the model's size
    img = np.ones((2, TINY_SIZE, TINY_SIZE, 3))
    img[0, :4, :4] = 0.5  # grey: background
    img[0, 10, 10, 1] = 0.93  # one channel below the threshold: foreground
    img[1, 20, 20] = 0.94  # exactly the threshold: still white
    img[1, 30, 30, 2] = 0.939
    sil = np.stack([geometry.silhouette(verts, faces, c.resized(TINY_SIZE, TINY_SIZE), dilate_px=TINY_SIZE // 32) for c in cams])
    assert 0 < sil.mean() < 1
    background = np.zeros((2, TINY_SIZE, TINY_SIZE), np.float32)
    background[0, :4, :4] = 1
    background[0, 10, 10] = 1
    background[1, 30, 30] = 1
    for mode, expected in [("mesh", sil), ("background", background), ("both", np.maximum(sil, background))]:
        got = pipe.alpha(img, verts, faces, cams, mode)
        assert got.dtype == np.float32 and got.shape == (2, TINY_SIZE, TINY_SIZE), mode
        np.testing.assert_array_equal(got, expected, err_msg=mode)


def test_to_and_attention_slicing(pipe):
    p = tiny_pipeline(with_clip=True)
    p.to(dtype=torch.float64)
    assert {next(m.parameters()).dtype for m in p.modules()} == {torch.float64} and p.dtype == torch.float64
    p.to(device="cpu")
    assert p.device.type == "cpu" and p.dtype == torch.float64
    assert len(p.modules()) == 4 and len(tiny_pipeline(with_clip=False).modules()) == 3
    p.enable_attention_slicing()
    assert p.processor.slice_size == 1024
    p.enable_attention_slicing(7)
    assert p.processor.slice_size == 7
    assert p.vae_scale_factor == 8


def test_construction_defaults_gates_and_frozen_modules(pipe):
    from engine.multiview.diffusion.pipeline import MultiViewPipeline
    from engine.multiview.diffusion.unet import self_attention_layers

    assert pipe.interrupt is False
    assert not any(q.requires_grad for m in pipe.modules() for q in m.parameters())
    assert all(not m.training for m in pipe.modules())
    bare = tiny_pipeline(joint_attention_max_tokens=123)
    assert bare.processor.max_tokens == 123 and bare.processor.gates == {}  # no gates: plain joint attention
    assert MultiViewPipeline(bare.unet, bare.vae, bare.scheduler, bare.conditioner).image_size == 256
    n = len(self_attention_layers(pipe.unet))
    gated = tiny_pipeline(joint_gate_layers=n)
    assert len(gated.processor.gates) == n
    assert {g for g, _ in gated.processor.gates.values()} == {gated.conditioner.joint_gates}
    with pytest.raises(ValueError, match="joint-attention gates"):
        tiny_pipeline(joint_gate_layers=n + 1)


@torch.no_grad()
@pytest.mark.parametrize("causal", [False, True])
def test_references_are_clean_views_after_the_input_view(causal):
    """A further photo (multi_reference): one more view after the input view, with its own camera
    (resized to the model's size), its view embedding relative to the input camera, its own clean
    VAE-mode latent in the sample, t = 0, and (causal_reference) the input and reference views
    attending only to each other: ε of the targets is unet_forward on exactly that stack."""
    p = tiny_pipeline(causal_reference=causal)
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    rgb = p.preprocess(crop)
    other = p.preprocess(np.ascontiguousarray(crop[:, ::-1]))  # another photo: the crop mirrored
    ref_cam = gen3dface(TINY_VIEWS).cameras(2 * TINY_SIZE)[1]
    cond = p.prepare_conditions(rgb, cam, verts, cams, None, references=[(other, ref_cam)])
    cfg, cm, n = p.conditioner.config, p.conditioner, TINY_VIEWS
    s = n + 2
    views = list(cams) + [cam.resized(TINY_SIZE, TINY_SIZE), ref_cam.resized(TINY_SIZE, TINY_SIZE)]
    c2w, intr = geometry.camera_tensors(views)
    assert cond.n_targets == n and cond.c2w.shape == (s, 4, 4)
    torch.testing.assert_close(cond.c2w, c2w)
    torch.testing.assert_close(cond.intr, intr)
    rel = geometry.view_embedding(views[-1:], views[-2], cfg.elevation_sign, cfg.azimuth_sign)
    torch.testing.assert_close(cond.v_embed[-1:], rel.to(cond.v_embed.dtype))
    clip_embed, latent = p.encode_input(rgb, None, "mode")
    ref_latent = p.encode_input(other, clip_embed, "mode")[1]
    assert (ref_latent - latent).abs().max() > 0.1  # the reference's latent is its own
    torch.testing.assert_close(cond.references, ref_latent)
    torch.testing.assert_close(cond.context, cm.context(clip_embed, cond.v_embed))
    latents = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t_views = torch.tensor([500] * n + [0, 0])
    t_emb = cm.embed_time(t_views)
    volume = cm.build_volume(latents, t_emb[:1], cond.v_embed[:n], cond.c2w[:n], cond.intr[:n], TINY_SIZE, cond.vertices, 2)
    frustum = cm.frustum_features(volume, t_emb, cond.v_embed, cond.c2w, cond.intr, TINY_SIZE, 2)
    concat = latent / (p.vae.config.scaling_factor if cfg.concat_unscaled else 1.0)
    x = torch.cat([torch.cat([latents, latent, ref_latent]), concat.expand(s, -1, -1, -1)], 1)
    expected = unet_forward(p.unet, cm, x, t_views, cond.context, frustum, s, s - n)[:n]
    got = p.predict_noise(latents, torch.tensor(500), cond, 1.0, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # the reference's photo moves the targets' prediction
    same = p.prepare_conditions(rgb, cam, verts, cams, None, references=[(rgb, ref_cam)])
    assert (p.predict_noise(latents, torch.tensor(500), same, 1.0, 2) - got).abs().max() > 1e-4


def test_identity_descriptor_is_the_second_context_token_and_moves_the_prediction():
    """identity_token: a face descriptor (numpy, as dlib gives it) becomes, per view, the view's
    own token plus W·e; none found gives the same token twice; the descriptor reaches ε."""
    p = tiny_pipeline(identity_dim=16)
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    rgb = p.preprocess(crop)
    e = np.linspace(-1.0, 1.0, 16)
    with_face = p.prepare_conditions(rgb, cam, verts, cams, None, identity=e)
    no_face = p.prepare_conditions(rgb, cam, verts, cams, None)
    w = p.conditioner.identity_projection.weight.detach().double().numpy()
    assert with_face.context.shape == (TINY_VIEWS + 1, 2, w.shape[0]) and with_face.context.dtype == torch.float32
    torch.testing.assert_close(no_face.context[:, 1], no_face.context[:, 0])
    torch.testing.assert_close(with_face.context[:, 0], no_face.context[:, 0])
    expected = no_face.context[:, 0].double().numpy() + w @ e
    np.testing.assert_allclose(with_face.context[:, 1].double().numpy(), expected, atol=1e-5)
    latents = torch.randn(TINY_VIEWS, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    for g in (1.0, 2.0):
        moved = p.predict_noise(latents, torch.tensor(500), with_face, g, 2)
        assert (moved - p.predict_noise(latents, torch.tensor(500), no_face, g, 2)).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [False, True])
def test_guided_prediction_with_a_reference_is_the_two_branch_combination(causal):
    """Guidance > 1 with a further photo: ε = ε_u + g (ε_c − ε_u), both branches in one
    unet_forward over the conditional stack and its unconditional copy (targets' latents kept,
    the input's and reference's latents, the concatenated latent and the context zeroed),
    with the input and reference views counted as references (causal_reference)."""
    p = tiny_pipeline(causal_reference=causal)
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    rgb = p.preprocess(crop)
    other = p.preprocess(np.ascontiguousarray(crop[::-1]))  # another photo: the crop upside down
    ref_cam = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)[2]
    cond = p.prepare_conditions(rgb, cam, verts, cams, None, references=[(other, ref_cam)])
    cm, n, s, g = p.conditioner, TINY_VIEWS, TINY_VIEWS + 2, 2.5
    latents = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    t_views = torch.tensor([700] * n + [0, 0])
    t_emb = cm.embed_time(t_views)
    volume = cm.build_volume(latents, t_emb[:1], cond.v_embed[:n], cond.c2w[:n], cond.intr[:n], TINY_SIZE, cond.vertices, 2)
    frustum = cm.frustum_features(volume, t_emb, cond.v_embed, cond.c2w, cond.intr, TINY_SIZE, 2)
    concat = cond.input_latent / (p.vae.config.scaling_factor if cm.config.concat_unscaled else 1.0)
    x = torch.cat([torch.cat([latents, cond.input_latent, cond.references]), concat.expand(s, -1, -1, -1)], 1)
    x_u = torch.cat([torch.cat([latents, torch.zeros(2, 4, 8, 8)]), torch.zeros(s, 4, 8, 8)], 1)
    both = unet_forward(p.unet, cm, torch.cat([x, x_u]), torch.cat([t_views, t_views]),
                        torch.cat([cond.context, torch.zeros_like(cond.context)]), frustum, s, 2)
    expected = both[s:s + n] + g * (both[:n] - both[s:s + n])
    got = p.predict_noise(latents, torch.tensor(700), cond, g, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_a_float_image_out_of_range_is_clamped_before_the_white_composite():
    p = tiny_pipeline()
    img = np.random.default_rng(0).uniform(-0.5, 1.5, (p.image_size, p.image_size, 4)).astype(np.float32)
    c = np.clip(img, 0.0, 1.0)
    expected = c[..., :3] * c[..., 3:] + (1.0 - c[..., 3:])  # the same size: the resize keeps it
    np.testing.assert_allclose(p.preprocess(img)[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_view_embedding_signs_reach_the_targets_and_the_references():
    """elevation_sign / azimuth_sign (zero123's −1 conventions) apply to the targets' and the
    references' embeddings alike, as geometry.view_embedding computes them."""
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    ref_cam = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)[1]
    p = tiny_pipeline(elevation_sign=-1.0, azimuth_sign=-1.0)
    rgb = p.preprocess(crop)
    cond = p.prepare_conditions(rgb, cam, verts, cams, None, references=[(rgb, ref_cam)])
    ref = cam.resized(TINY_SIZE, TINY_SIZE)
    flipped = geometry.view_embedding(list(cams), ref, -1.0, -1.0)
    assert (flipped - geometry.view_embedding(list(cams), ref)).abs().max() > 0.1  # the signs matter here
    torch.testing.assert_close(cond.v_embed[:TINY_VIEWS], flipped.to(cond.v_embed.dtype))
    torch.testing.assert_close(cond.v_embed[-1:], geometry.view_embedding([ref_cam], ref, -1.0, -1.0).to(cond.v_embed.dtype))


def test_without_the_input_view_only_the_targets_run():
    """include_input_view off: the UNet sees the targets alone (no input view, no references)."""
    p = tiny_pipeline(include_input_view=False)
    crop, cam, verts, _ = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    rgb = p.preprocess(crop)
    cond = p.prepare_conditions(rgb, cam, verts, cams, None, references=[(rgb, cams[1])])
    assert cond.c2w.shape[0] == cond.v_embed.shape[0] == TINY_VIEWS and cond.references is None
    latents = torch.randn(TINY_VIEWS, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    assert p.predict_noise(latents, torch.tensor(500), cond, 2.0, 2).shape == latents.shape
