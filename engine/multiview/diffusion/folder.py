"""A model folder: ``model_index.json`` + one ``config.json`` and one safetensors per component.

Layout (diffusers-like, so diffusers' component classes read their own configs):

    model_index.json                       format, image size, components, sha256 per file
    conventions.json                       the family's cameras, frame, pixel/voxel rules, sampler defaults
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    vae/config.json,  vae/diffusion_pytorch_model.safetensors
    conditioner/config.json, conditioner/diffusion_pytorch_model.safetensors
    image_encoder/config.json, image_encoder/model.safetensors     (optional: CLIP)
    scheduler/scheduler_config.json

Loading verifies every file (present, parses, sha256 when listed, every key present with
the right shape) before building anything; failures raise ``WeightsError`` naming the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from weights import conventions as conv_file
from weights.discovery import FORMAT
from weights.safeload import WeightsError, load_safetensors, save_safetensors

from . import clip
from .conditioner import MultiViewConditioner
from .config import ConditionerConfig
from .pipeline import MultiViewPipeline

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
           "conditioner": "diffusion_pytorch_model.safetensors", "image_encoder": "model.safetensors"}


def _config_of(name: str, module) -> dict:
    if name == "conditioner":
        return {"_class_name": "MultiViewConditioner", "latent": module.latent, **module.config.to_dict()}
    if name == "image_encoder":
        return clip.config_dict(module)
    return dict(module.config)


def save_pretrained(pipe: MultiViewPipeline, folder: str | Path) -> Path:
    """Write ``pipe`` as a model folder (fp32 weights unless the modules are already half)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comps = {"unet": pipe.unet, "vae": pipe.vae, "conditioner": pipe.conditioner, "image_encoder": pipe.image_encoder}
    digests = {}
    for name, module in comps.items():
        if module is None:
            continue
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(_config_of(name, module), indent=1, default=list))
        rel = f"{name}/{WEIGHTS[name]}"
        digests[rel] = save_safetensors(module.state_dict(), folder / rel)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(pipe.scheduler.config), indent=1, default=list))
    index = {"_class_name": "MultiViewPipeline", "format": FORMAT, "format_version": FORMAT_VERSION,
             "image_size": pipe.image_size, "components": sorted(n for n, m in comps.items() if m is not None),
             "sha256": digests}
    conv_file.write(pipe.conventions, folder)
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


def check_conventions(conv, cond: MultiViewConditioner, image_size: int, folder: Path) -> None:
    """The conditioner must be built for the lengths and rules its conventions state."""
    cfg, path = cond.config, folder / conv_file.FILENAME
    for name in ("volume_length", "frustum_length", "voxel_size", "voxelisation"):
        if getattr(cfg, name) != getattr(conv, name):
            raise WeightsError(path, f"{name} is {getattr(conv, name)!r}, conditioner/config.json says {getattr(cfg, name)!r}")
    if conv.image_size != image_size:
        raise WeightsError(path, f"image_size is {conv.image_size}, model_index.json says {image_size}")
    if conv.n_views is not None and cfg.use_spatial_volume and conv.n_views != cfg.n_views:
        raise WeightsError(path, f"{conv.n_views} views, the conditioner is built for {cfg.n_views}")


def _read_json(path: Path) -> dict:
    return conv_file.read_json_object(path)


def _load_into(module: torch.nn.Module, path: Path, sha256: str | None) -> None:
    state = load_safetensors(path, sha256)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else "") + \
                 (f" {len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "")
        raise WeightsError(path, f"weights do not match the config: {detail.strip()}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise WeightsError(path, f"shape of {bad[0]} is {tuple(state[bad[0]].shape)}, config expects {tuple(own[bad[0]].shape)}")
    module.load_state_dict(state, strict=True)


def _build(name: str, config: dict, path: Path):
    try:
        if name == "unet":
            return UNet2DConditionModel.from_config(config)
        if name == "vae":
            return AutoencoderKL.from_config(config)
        if name == "conditioner":
            cfg = dict(config)
            latent = int(cfg.pop("latent"))
            return MultiViewConditioner(ConditionerConfig.from_dict(cfg), latent)
        return clip.build(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(path, f"bad {name} config: {exc}") from None


def load_folder(folder: str | Path, device="cpu", dtype=torch.float32, verify_hashes: bool = True) -> MultiViewPipeline:
    """Verify and load a model folder written by ``save_pretrained`` or a converter."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    if index.get("format") != FORMAT:
        raise WeightsError(folder / "model_index.json", f"not a {FORMAT} model folder (format={index.get('format')!r})")
    comps = set(index.get("components", []))
    for required in ("unet", "vae", "conditioner"):
        if required not in comps:
            raise WeightsError(folder / "model_index.json", f"component {required!r} missing")
    digests = index.get("sha256", {}) if verify_hashes else {}
    modules = {}
    for name in ("unet", "vae", "conditioner", "image_encoder"):
        if name not in comps:
            continue
        if name == "image_encoder" and not clip.available():
            log.warning("transformers missing: the image encoder is not loaded, pass image embeddings")
            continue
        module = _build(name, _read_json(folder / name / "config.json"), folder / name / "config.json")
        rel = f"{name}/{WEIGHTS[name]}"
        _load_into(module, folder / rel, digests.get(rel))
        modules[name] = module
    sched_path = folder / "scheduler" / "scheduler_config.json"
    scheduler = DDIMScheduler.from_config(_read_json(sched_path))
    image_size = int(index.get("image_size", 256))
    cond = modules["conditioner"]
    if tuple(cond.config.unet_block_out_channels) != tuple(modules["unet"].config.block_out_channels):
        raise WeightsError(folder / "conditioner" / "config.json", "unet_block_out_channels differ from the UNet's")
    if cond.latent * 2 ** (len(modules["vae"].config.block_out_channels) - 1) != image_size:
        raise WeightsError(folder / "model_index.json", "image_size, VAE factor and conditioner latent disagree")
    conventions = conv_file.read(folder)
    check_conventions(conventions, cond, image_size, folder)
    pipe = MultiViewPipeline(modules["unet"], modules["vae"], scheduler, cond, modules.get("image_encoder"), image_size,
                             conventions)
    return pipe.to(device=device, dtype=dtype)
