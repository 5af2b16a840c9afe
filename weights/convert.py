"""Checkpoint → model folder, shared by convert_syncdreamer / convert_morphable.

Writes the folder format of ``engine/multiview/diffusion/folder.py`` (model_index.json,
per-component config.json + safetensors with sha256) without importing the engine.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from . import conventions as conv_file
from .architectures import SCHEDULER, SD15_UNET, SD_VAE
from .ckpt import load_state_dict
from .discovery import FORMAT
from .ldm_keys import (CONDITIONER_PREFIXES, DROPPED_PREFIXES, UNET_PREFIX, VAE_PREFIX, is_vae_attention_matrix,
                       unet_ldm_name, vae_ldm_name)
from .safeload import WeightsError, save_safetensors

log = logging.getLogger(__name__)
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def _expected_keys(cls, config: dict) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    return {k: v.shape for k, v in model.state_dict().items()}


def split_checkpoint(state: dict[str, torch.Tensor], unet_cfg: dict, vae_cfg: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Map every checkpoint key to (component, our key); unknown keys are an error."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    out: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "conditioner": {}}
    unet_names = {UNET_PREFIX + unet_ldm_name(k, unet_cfg): k for k in _expected_keys(UNet2DConditionModel, unet_cfg)}
    vae_names = {VAE_PREFIX + vae_ldm_name(k, vae_cfg): k for k in _expected_keys(AutoencoderKL, vae_cfg)}
    unknown = []
    for key, value in state.items():
        cond = next((p for p in CONDITIONER_PREFIXES if key.startswith(p)), None)
        if cond is not None:
            out["conditioner"][CONDITIONER_PREFIXES[cond] + key[len(cond):]] = value
        elif key in unet_names:
            out["unet"][unet_names[key]] = value
        elif key in vae_names:
            ours = vae_names[key]
            out["vae"][ours] = value[:, :, 0, 0] if is_vae_attention_matrix(ours) and value.dim() == 4 else value
        elif key.startswith(DROPPED_PREFIXES) or key.startswith(VAE_PREFIX + "loss"):
            continue
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError("checkpoint", f"{len(unknown)} keys have no mapping (e.g. {unknown[0]})")
    return out


def convert(ckpt: str | Path, out: str | Path, conditioner_cfg: dict, unet_cfg: dict = SD15_UNET,
            vae_cfg: dict = SD_VAE, image_size: int = 256, state: dict | None = None,
            conventions: "conv_file.Conventions | None" = None) -> Path:
    """Convert ``ckpt`` (or an already loaded ``state``) into the model folder ``out``.

    ``conventions`` (the family's, ``weights/conventions.py``) go to ``out/conventions.json``; the
    conditioner's lengths and voxelisation are taken from them, so the two cannot disagree.
    """
    if conventions is None:
        raise WeightsError(out, "no conventions given: a converted checkpoint needs its family's conventions")
    conditioner_cfg = dict(conditioner_cfg, volume_length=conventions.volume_length,
                           frustum_length=conventions.frustum_length, voxel_size=conventions.voxel_size,
                           voxelisation=conventions.voxelisation)
    state = load_state_dict(ckpt) if state is None else state
    parts = split_checkpoint(state, unet_cfg, vae_cfg)
    out = Path(out)
    configs = {"unet": dict(unet_cfg, _class_name="UNet2DConditionModel"),
               "vae": dict(vae_cfg, _class_name="AutoencoderKL"),
               "conditioner": dict(conditioner_cfg, _class_name="MultiViewConditioner")}
    digests = {}
    for name, tensors in parts.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "config.json").write_text(json.dumps(configs[name], indent=1, default=list))
        digests[f"{name}/{WEIGHTS_NAME}"] = save_safetensors(tensors, out / name / WEIGHTS_NAME)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=1))
    index = {"_class_name": "MultiViewPipeline", "format": FORMAT, "format_version": 1, "image_size": image_size,
             "components": sorted(parts), "sha256": digests, "converted_from": str(ckpt)}
    conv_file.write(conventions, out)
    (out / "model_index.json").write_text(json.dumps(index, indent=1))
    log.info("wrote %s (%s)", out, ", ".join(f"{k}: {len(v)} tensors" for k, v in parts.items()))
    return out


def command(doc: str, conditioner, conventions, argv=None) -> int:
    """The ``python -m weights.convert_<source> CKPT OUT`` command shared by the converters."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("ckpt", help="the PyTorch-Lightning .ckpt file")
    ap.add_argument("out", help="the model folder to write")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    convert(args.ckpt, args.out, conditioner, conventions=conventions)
    return 0
