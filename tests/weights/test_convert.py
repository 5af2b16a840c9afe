"""Converters: key tables vs diffusers' converters, a synthetic Lightning checkpoint with the
real key names → model folder → the engine loads exactly the weights it was built from."""
from __future__ import annotations

import argparse
import dataclasses
import os

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from weights import ckpt as ckpt_mod
from weights import conventions
from weights.architectures import SD15_UNET, SD_VAE
from weights.convert import convert
from weights.ldm_keys import is_vae_attention_matrix, unet_ldm_name, vae_ldm_name
from weights.registry import KNOWN, describe
from weights.safeload import WeightsError


def _numbered(model):
    return {k: torch.full(v.shape, float(i)) for i, (k, v) in enumerate(model.state_dict().items())}


def test_tables_agree_with_diffusers_single_file_converters():
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD_VAE)
    names = list(unet.state_dict())
    ldm = {"model.diffusion_model." + unet_ldm_name(k, SD15_UNET): torch.tensor([float(i)]) for i, k in enumerate(names)}
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert {k: int(v.item()) for k, v in back.items()} == {k: i for i, k in enumerate(names)}
    vnames = list(vae.state_dict())
    ldm = {"first_stage_model." + vae_ldm_name(k, SD_VAE): torch.tensor([[float(i)]])[:, :, None, None]
           if is_vae_attention_matrix(k) else torch.tensor([float(i)]) for i, k in enumerate(vnames)}
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    assert {k: int(v.flatten()[0].item()) for k, v in back.items()} == {k: i for i, k in enumerate(vnames)}


def _synthetic_checkpoint(pipe, path):
    """A Lightning-style .ckpt with SyncDreamer/Morphable key names built from ``pipe``."""
    from engine.multiview.diffusion.presets import TINY_UNET, TINY_VAE

    state = {}
    for k, v in pipe.conditioner.state_dict().items():
        prefix = "model.diffusion_model." if k.startswith(("middle_conditions", "output_conditions")) else ""
        state[prefix + k] = v.clone()
    for k, v in pipe.unet.state_dict().items():
        state["model.diffusion_model." + unet_ldm_name(k, TINY_UNET)] = v.clone()
    for k, v in pipe.vae.state_dict().items():
        state["first_stage_model." + vae_ldm_name(k, TINY_VAE)] = v[:, :, None, None].clone() if is_vae_attention_matrix(k) else v.clone()
    state["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    state["clip_image_encoder.model.visual.proj"] = torch.zeros(4, 4)
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4), "epoch": 3}, path)
    return state


@pytest.mark.parametrize("flavour", ["syncdreamer", "morphable"])
def test_checkpoint_to_folder_round_trip(tmp_path, flavour):
    from engine.multiview.diffusion import load_pipeline
    from engine.multiview.diffusion.presets import TINY_UNET, TINY_VAE, tiny_pipeline

    flags = (dict(use_spatial_volume=True, use_mesh_volume=False, spatial_dims=(8, 16, 16, 16), elevation_sign=-1.0)
             if flavour == "syncdreamer" else dict(use_cc_projection=False))
    pipe = tiny_pipeline(with_clip=False, **flags)
    _synthetic_checkpoint(pipe, tmp_path / "model.ckpt")
    cond_cfg = {"latent": pipe.conditioner.latent, **pipe.conditioner.config.to_dict()}
    conv = conventions.BUILDERS[flavour](n_views=4, image_size=64)
    out = convert(tmp_path / "model.ckpt", tmp_path / "folder", cond_cfg, TINY_UNET, TINY_VAE, image_size=64,
                  conventions=conv)
    loaded = load_pipeline(out, "cpu", "fp32")
    assert loaded.conventions == conv  # conventions.json round trip, every field
    cfg = loaded.conditioner.config  # the conditioner is built in the checkpoint's own units
    assert (cfg.volume_length, cfg.frustum_length, cfg.voxel_size) == (0.5, 0.86603, 0.005)
    assert cfg.voxelisation == ("morphable" if flavour == "morphable" else "neuralbody")
    for name in ("unet", "vae", "conditioner"):
        ref, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), (name, k)
    if flavour == "morphable":
        assert any(k.startswith("spatial_volume.xyzc_net.conv0.0.weight") for k in loaded.conditioner.state_dict())


def test_unmapped_key_is_an_error(tmp_path):
    from engine.multiview.diffusion.presets import TINY_UNET, TINY_VAE, tiny_pipeline

    pipe = tiny_pipeline(with_clip=False)
    state = _synthetic_checkpoint(pipe, tmp_path / "m.ckpt")
    state["model.diffusion_model.extra_thing.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="no mapping"):
        convert("m.ckpt", tmp_path / "f", {}, TINY_UNET, TINY_VAE, state=state, conventions=conventions.syncdreamer())


def test_restricted_unpickler_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": Evil()}, tmp_path / "evil.ckpt")
    state = ckpt_mod.load_state_dict(tmp_path / "evil.ckpt")
    assert torch.equal(state["w"], torch.ones(2)) and not marker.exists()
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        ckpt_mod.load_state_dict(tmp_path / "bad.ckpt")


def test_registry_says_where_to_get_each_checkpoint():
    for name, c in KNOWN.items():
        assert c.source.startswith("https://") and c.licence
        assert name in describe(name)
    assert dataclasses.is_dataclass(KNOWN["syncdreamer"])
