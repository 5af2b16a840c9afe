"""The identity token (SpinMeRound, seed 000): a dlib face descriptor as one more context token."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.engine.diffusion_fixtures import tiny_inputs, write_tiny_model

BASE = dict(model="tiny", image_size=64, n_targets=2, seed=3)


def _latents(pipe, identity, seed: int = 0):
    crop, cam, verts, faces = tiny_inputs()
    from recon.cameras import orbit_camera

    targets = [orbit_camera(a, 0.0, 1.0, 26.0, 64) for a in (60.0, 180.0)]
    return pipe(crop, cam, verts, faces, targets, num_inference_steps=2, output_type="latent",
                generator=torch.Generator().manual_seed(seed), identity=identity).latents


def _pipes():
    from engine.train.config import TrainConfig
    from engine.train.loop import build_pipeline

    return build_pipeline(TrainConfig(**BASE)), build_pipeline(TrainConfig(**BASE, conditioning=("identity_token",)))


def _vectors():
    rng = np.random.default_rng(7)
    return rng.normal(size=128).astype(np.float32), rng.normal(size=128).astype(np.float32)


def test_zero_init_is_a_no_op_and_a_trained_layer_reads_the_embedding():
    plain, with_token = _pipes()
    assert not hasattr(plain.conditioner, "identity_projection") and plain.conditioner.config.identity_dim == 0
    layer = with_token.conditioner.identity_projection
    assert layer.weight.shape == (32, 128) and layer.bias is None and not layer.weight.any()
    a, b = _vectors()
    before = _latents(plain, None)
    assert torch.equal(_latents(with_token, a), before)  # zero-init: the converted model is unchanged
    with torch.no_grad():
        layer.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    ya, yb = _latents(with_token, a), _latents(with_token, b)
    assert float((ya - yb).abs().max()) > 1e-3  # another identity, other latents
    assert torch.equal(_latents(with_token, None), before)  # no face: the token adds nothing


def test_the_model_folder_round_trips_the_token(tmp_path):
    from engine.multiview.diffusion import load_pipeline

    folder = write_tiny_model(tmp_path / "m", n_views=2, identity_dim=128)  # tiny preset randomises zero layers
    pipe = load_pipeline(folder)
    assert pipe.conditioner.config.identity_dim == 128
    w = pipe.conditioner.identity_projection.weight
    assert w.any()
    again = load_pipeline(folder)
    a, _ = _vectors()
    assert torch.equal(again.conditioner.identity_projection.weight, w)
    assert torch.equal(_latents(pipe, a), _latents(again, a))


def test_the_token_is_one_more_context_token_per_view():
    _, pipe = _pipes()
    with torch.no_grad():
        pipe.conditioner.identity_projection.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    ctx = pipe.conditioner.context(torch.ones(32), torch.zeros(3, 4), torch.from_numpy(_vectors()[0]))
    assert ctx.shape == (3, 2, 32) and not torch.equal(ctx[:, 0], ctx[:, 1])


@pytest.mark.slow
def test_dataset_embeddings_are_real_dlib_and_cached(tiny_dataset, tmp_path):
    from engine.dataset import format as fmt
    from engine.dataset.identity import FILE, ensure_identities, read_identity
    from engine.eval.embedders import DlibFaces
    from engine.multiview.diffusion.identity import on_white

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    section = ensure_identities(root)
    ids = fmt.list_items(root)
    dlib = DlibFaces()
    for item_id in ids:
        found = dlib.faces(on_white(fmt.read_rgba(root / item_id / "input" / "crop.png")))
        v = read_identity(root, item_id)
        assert (v is None) == (not found) == (item_id in section["no_face"])
        if v is not None:  # independent: dlib on the same crop
            assert np.allclose(v, found[0].vector, atol=1e-6)
    assert section["faces"] >= 1 and fmt.read_manifest(root)["identity"] == section
    stamps = {i: (root / i / FILE).stat().st_mtime_ns for i in ids}
    ensure_identities(root)  # cached: nothing rewritten
    assert stamps == {i: (root / i / FILE).stat().st_mtime_ns for i in ids}
    crop = root / ids[0] / "input" / "crop.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(crop)  # the crop changed: recomputed (no face)
    ensure_identities(root)
    assert read_identity(root, ids[0]) is None and (root / ids[0] / FILE).stat().st_mtime_ns != stamps[ids[0]]


@pytest.mark.slow
def test_one_training_step_trains_the_token_and_generate_warns_without_a_face(tiny_dataset, tmp_path):
    from engine.context import RunContext
    from engine.dataset.identity import read_identity
    from engine.multiview import diffusion
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    # batch 3 = one epoch of the 3 training items: the one where dlib finds a face is in it
    cfg = TrainConfig(**{**BASE, "n_targets": 4}, batch_size=3, max_steps=1, checkpoint_every=1, validate_every=0,
                      tracker="none", val_items=1, cond_dropout=0.0, conditioning=("identity_token",))
    r = train(root, tmp_path / "run", cfg)
    assert np.isfinite(r.loss)
    pipe = diffusion.load_pipeline(r.checkpoint)
    assert pipe.conditioner.config.identity_dim == 128
    from engine.dataset import format as fmt

    assert any(read_identity(root, i) is not None for i in fmt.list_items(root)[:-1])
    assert pipe.conditioner.identity_projection.weight.any()  # the zero layer got a gradient from that face
    item = fmt.load_item(root, fmt.list_items(root)[0])
    crop = np.full((64, 64, 4), 255, np.uint8)  # a white crop: no face
    ctx = RunContext()
    diffusion.run(crop, (item.vertices, item.faces, item.input_camera), tmp_path / "gen",
                  diffusion.DiffusionConfig(n_views=2, steps=1), ctx, r.checkpoint)
    assert [w["code"] for w in ctx.warnings] == ["identity_no_face"]
