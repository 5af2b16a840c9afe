"""Conditioning options (TrainConfig.conditioning): each changes what it should and nothing else."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def _unet_rows(causal: bool, seed: int):
    """Noise prediction of a 3-view sample (2 targets + the input view) of a tiny model, zero volume."""
    from engine.multiview.diffusion.presets import tiny_pipeline
    from engine.multiview.diffusion.unet import unet_forward
    from engine.train.objective import _zero_levels

    pipe = tiny_pipeline(seed=0, n_views=2, size=64, with_clip=False, causal_reference=causal)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:2] = torch.randn(2, 8, 8, 8, generator=g)  # only the targets' latents change with the seed
    t = torch.tensor([500, 500, 0])
    ctx = torch.randn(3, 1, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return unet_forward(pipe.unet, pipe.conditioner, x, t, ctx, _zero_levels(pipe.conditioner, x.dtype), 3)


def test_causal_reference_isolates_the_input_view():
    causal_a, causal_b = _unet_rows(True, 5), _unet_rows(True, 6)
    assert torch.allclose(causal_a[2], causal_b[2], atol=1e-6)  # the input view sees only itself
    assert not torch.allclose(causal_a[:2], causal_b[:2], atol=1e-4)
    joint_a, joint_b = _unet_rows(False, 5), _unet_rows(False, 6)
    assert not torch.allclose(joint_a[2], joint_b[2], atol=1e-4)  # joint: it sees the targets
    assert not torch.allclose(causal_a[:2], joint_a[:2], atol=1e-4)  # targets still attend to it, differently


def test_causal_mask_shape():
    from engine.multiview.diffusion.attention import MultiViewAttnProcessor

    m = MultiViewAttnProcessor.causal_mask(3, 2, 1, "cpu")
    assert m.shape == (6, 6) and m[:4].all() and not m[4:, :4].any() and m[4:, 4:].all()


@pytest.fixture
def model_and_data(tiny_dataset):
    from engine.train.config import TrainConfig
    from engine.train.data import TrainSet
    from engine.train.loop import build_pipeline

    cfg = TrainConfig(model="tiny", image_size=64, n_targets=4, seed=3)
    return build_pipeline(cfg), lambda refs=0: TrainSet(tiny_dataset, 64, 4, seed=3, n_references=refs)


def _loss(model, s):
    with torch.no_grad():
        return float(model([s], 0.0, torch.tensor([400])))


@pytest.mark.slow
def test_frontal_clip_conditions_on_the_frontal_view(model_and_data):
    from engine.train.objective import TrainModel

    pipe, data = model_and_data
    on, off = TrainModel(pipe, frontal_clip=True), TrainModel(pipe, frontal_clip=False)

    def with_frontal(flip):
        s = data().sample(0)
        if flip:
            s.frontal_rgb = 1 - s.frontal_rgb
        return s

    assert _loss(on, with_frontal(False)) != _loss(on, with_frontal(True))
    assert _loss(off, with_frontal(False)) == _loss(off, with_frontal(True))


@pytest.mark.slow
def test_multi_reference_adds_masked_reference_views(model_and_data):
    from engine.train.objective import TrainModel

    pipe, data = model_and_data
    model = TrainModel(pipe, reference_mask=0.5)
    s = data(refs=2).sample(0)
    assert s.references.shape == (2, 3, 64, 64) and len(s.reference_cameras) == 2
    targets = {tuple(c.c2w.ravel().round(6)) for c in s.target_cameras}
    assert not targets & {tuple(c.c2w.ravel().round(6)) for c in s.reference_cameras}
    base = _loss(model, data(refs=2).sample(0))
    flipped = data(refs=2).sample(0)
    flipped.references = 1 - flipped.references
    assert _loss(model, flipped) != base  # the targets attend to the references
    assert data(refs=0).sample(0).references is None
    z = model._references(data(refs=2).sample(0))
    full = model._encode(s.references, None)
    masked = (z == 0).all(1)  # [R, r, r]
    assert masked.any() and (~masked).any() and torch.equal(z[~masked[:, None].expand_as(z)], full[~masked[:, None].expand_as(z)])


def _rows_of(pipe):
    from engine.multiview.diffusion.unet import unet_forward
    from engine.train.objective import _zero_levels

    x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    ctx = torch.randn(3, 1, 32, generator=torch.Generator().manual_seed(2))
    return unet_forward(pipe.unet, pipe.conditioner, x, torch.tensor([500, 500, 0]), ctx,
                        _zero_levels(pipe.conditioner, x.dtype), 3)


def test_gated_joint_attention_starts_as_the_per_view_model(tmp_path):
    from engine.multiview.diffusion import load_pipeline, save_pretrained
    from engine.train.config import TrainConfig
    from engine.train.loop import build_pipeline

    base = dict(model="tiny", image_size=64, n_targets=2, seed=4)
    gated = build_pipeline(TrainConfig(**base, gate_joint_attention=True))
    solo = build_pipeline(TrainConfig(**base, joint_attention=False))
    joint = build_pipeline(TrainConfig(**base))
    with torch.no_grad():
        assert torch.equal(_rows_of(gated), _rows_of(solo))  # a no-op at the start
        assert not torch.allclose(_rows_of(joint), _rows_of(solo), atol=1e-4)
    out = _rows_of(gated).square().mean()
    out.backward()
    assert gated.conditioner.joint_gates.grad.abs().sum() > 0  # and it learns
    with torch.no_grad():
        gated.conditioner.joint_gates.fill_(1.0)  # fully open = plain joint attention
        assert torch.allclose(_rows_of(gated), _rows_of(joint), atol=1e-5)
        gated.conditioner.joint_gates.fill_(0.3)
        expect = _rows_of(gated)
    loaded = load_pipeline(save_pretrained(gated, tmp_path / "m"))  # gates travel with the folder
    with torch.no_grad():
        assert torch.allclose(_rows_of(loaded), expect, atol=1e-6)
