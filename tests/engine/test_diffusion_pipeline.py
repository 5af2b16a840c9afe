"""MultiViewPipeline end to end on a tiny model folder: outputs, seeds, save/load, cancel, run()."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine.context import RunContext
from engine.errors import BadInput, Cancelled, ModelMissing
from engine.multiview.diffusion import DiffusionConfig, find_weights, load_pipeline, run
from engine.multiview.layouts import gen3dface

from .camera_checks import alpha_box_gap, assert_views_match_cameras, frame_of
from .diffusion_fixtures import TINY_SIZE, TINY_VIEWS, tiny_inputs

torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


def _call(pipe, seed=0, steps=2, **kw):
    crop, cam, verts, faces = tiny_inputs()
    cams = gen3dface(TINY_VIEWS).cameras(TINY_SIZE)
    return pipe(crop, cam, verts, faces, cams, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed), **kw)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir, "cpu", "fp32")


def test_outputs_shapes_ranges_and_seed(pipe):
    a = _call(pipe, seed=0)
    assert a.images.shape == (TINY_VIEWS, TINY_SIZE, TINY_SIZE, 4) and a.images.dtype == np.uint8
    _, _, verts, _ = tiny_inputs()
    for alpha, cam in zip(a.images[..., 3] > 127, a.cameras):  # each alpha: the prior's silhouette from its camera
        assert alpha_box_gap(alpha, frame_of(cam), {}, verts, dilate_px=TINY_SIZE // 32) < 1.5
    assert a.images[..., :3].std() > 1  # decoded pixels, not a constant
    assert len(a.cameras) == TINY_VIEWS and a.cameras[0].w == TINY_SIZE
    b = _call(pipe, seed=0)
    np.testing.assert_array_equal(a.images, b.images)
    c = _call(pipe, seed=1)
    assert np.abs(c.latents - a.latents).max() > 1e-3


def test_save_load_round_trip_is_exact(pipe, tmp_path):
    from engine.multiview.diffusion import save_pretrained

    again = load_pipeline(save_pretrained(pipe, tmp_path / "copy"), "cpu", "fp32")
    a, b = _call(pipe, steps=1, output_type="latent"), _call(again, steps=1, output_type="latent")
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)


def test_image_embeds_replace_the_encoder(pipe):
    emb = torch.randn(1, pipe.conditioner.config.clip_dim, generator=torch.Generator().manual_seed(0))
    out = _call(pipe, steps=1, image_embeds=emb, output_type="latent")
    ref = _call(pipe, steps=1, output_type="latent")
    assert (out.latents - ref.latents).abs().max() > 1e-5


def test_cancel_in_the_middle_of_the_loop(pipe):
    ctx, seen = RunContext(), []

    def on_step(p, i, t, kwargs):
        seen.append(i)
        if i == 1:
            ctx.cancel()
        ctx.progress(i + 1, 5)
        return kwargs

    with pytest.raises(Cancelled):
        _call(pipe, steps=5, callback_on_step_end=on_step, output_type="latent")
    assert seen == [0, 1]


def test_run_writes_views_and_transforms(tiny_model_dir, tmp_path):
    crop, cam, verts, faces = tiny_inputs()
    verts = verts + [0.05, 0.0, 0.03]  # off centre, so every view's silhouette sits somewhere else
    events = []
    ctx = RunContext(emit=events.append)
    cfg = DiffusionConfig(n_views=TINY_VIEWS, size=TINY_SIZE, steps=2, seed=3)
    path = run(crop, (verts, faces, cam), tmp_path, cfg, ctx, weights_dir=tiny_model_dir)
    meta = json.loads(path.read_text())
    assert len(meta["frames"]) == TINY_VIEWS and meta["backend"] == "diffusion"
    assert "input_frame" in meta and meta["w"] == TINY_SIZE
    img = Image.open(tmp_path / meta["frames"][0]["file_path"])
    assert img.mode == "RGBA" and img.size == (TINY_SIZE, TINY_SIZE)
    assert sum(1 for e in events if type(e).__name__ == "Progress") == 2
    # each view's alpha is the prior's silhouette seen by that view's own written camera
    assert_views_match_cameras(tmp_path, verts, dilate_px=TINY_SIZE // 32)  # the pipeline dilates by size/32


def test_find_weights(tiny_model_dir, tmp_path):
    assert find_weights(tiny_model_dir.parent) == tiny_model_dir
    assert find_weights(tmp_path) is None
    ctx = RunContext(models_dir=tmp_path)
    crop, cam, verts, faces = tiny_inputs()
    with pytest.raises(ModelMissing, match="no multi-view model"):
        run(crop, (verts, faces, cam), tmp_path / "run", DiffusionConfig(n_views=TINY_VIEWS, size=TINY_SIZE), ctx)


@pytest.mark.parametrize("damage", ["missing", "truncated", "hash", "shape", "json"])
def test_damaged_folder_is_model_missing(tiny_model_dir, tmp_path, damage):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    weights = folder / "conditioner" / "diffusion_pytorch_model.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "hash":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "shape":
        cfg = json.loads((folder / "conditioner" / "config.json").read_text())
        cfg["encoder_dim"] = 16
        (folder / "conditioner" / "config.json").write_text(json.dumps(cfg))
    else:
        (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelMissing) as info:
        load_pipeline(folder, "cpu", "fp32")
    assert str(folder) in info.value.message and "convert" in info.value.message
    assert info.value.exit_code == 3


def test_bad_inputs(tiny_model_dir, tmp_path):
    crop, cam, verts, faces = tiny_inputs()
    cfg = DiffusionConfig(n_views=TINY_VIEWS, size=TINY_SIZE, steps=1)
    with pytest.raises(BadInput, match="crop"):
        run(crop[..., 0], (verts, faces, cam), tmp_path, cfg, RunContext(), tiny_model_dir)
    with pytest.raises(BadInput, match="vertices"):
        run(crop, (verts[:, :2], faces, cam), tmp_path, cfg, RunContext(), tiny_model_dir)
    with pytest.raises(BadInput, match="faces"):
        run(crop, (verts, faces + len(verts), cam), tmp_path, cfg, RunContext(), tiny_model_dir)
    with pytest.raises(BadInput, match="prior"):
        run(crop, (verts, faces), tmp_path, cfg, RunContext(), tiny_model_dir)
    with pytest.raises(BadInput, match="px"):
        run(crop, (verts, faces, cam), tmp_path, DiffusionConfig(n_views=4, size=128), RunContext(), tiny_model_dir)
    with pytest.raises(ValueError, match="unknown"):
        DiffusionConfig.from_dict({"stepz": 3})
