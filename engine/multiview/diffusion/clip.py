"""The CLIP image encoder, isolated: ``transformers`` if installed, else embeddings come in.

SyncDreamer conditions on the CLIP ViT-L/14 image embedding (768-d after the visual
projection). ``transformers.CLIPVisionModelWithProjection`` computes the same thing. When
transformers is missing the pipeline still runs if the caller passes ``image_embeds``.
"""
from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: CLIP's pixel normalisation (OpenAI).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def available() -> bool:
    """True when ``transformers`` can be imported."""
    return importlib.util.find_spec("transformers") is not None


def _require():
    if not available():
        raise ImportError("transformers is not installed: pass image_embeds to the pipeline, or pip install transformers")
    import transformers  # noqa: PLC0415 - optional dependency, isolated here

    return transformers


def build(config: dict) -> torch.nn.Module:
    """A ``CLIPVisionModelWithProjection`` from its config dict (random weights)."""
    tf = _require()
    cfg = tf.CLIPVisionConfig(**{k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "model_type")})
    return tf.CLIPVisionModelWithProjection(cfg).eval()


def config_dict(model: torch.nn.Module) -> dict:
    """The JSON-able config of an encoder built by ``build``."""
    return model.config.to_dict()


def tiny_config(projection_dim: int = 32, image_size: int = 32) -> dict:
    """A very small ViT for tests (no download)."""
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                image_size=image_size, patch_size=8, projection_dim=projection_dim)


def resize(rgb: torch.Tensor, size: int, mode: str = "antialias_bicubic") -> torch.Tensor:
    """rgb [n, 3, H, W] in [0, 1] → [n, 3, size, size].

    kornia_bicubic is the references' ``FrozenCLIPImageEmbedder.preprocess``:
    ``kornia.geometry.resize(x, (224, 224), interpolation='bicubic', align_corners=True,
    antialias=False)`` on x in [−1, 1], then (x + 1) / 2 — kornia calls ``F.interpolate`` with
    those arguments when antialias is off; no clamping. antialias_bicubic: ours (Gen3D-Face models).
    """
    if mode == "kornia_bicubic":
        x = F.interpolate(rgb * 2 - 1, size=(size, size), mode="bicubic", align_corners=True)
        return (x + 1.0) / 2.0
    if mode != "antialias_bicubic":
        raise ValueError(f"unknown CLIP resize {mode!r}")
    return F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


@torch.no_grad()
def encode(model: torch.nn.Module, rgb: torch.Tensor, resize_mode: str = "antialias_bicubic") -> torch.Tensor:
    """rgb: [1, 3, H, W] in [0, 1] → image embedding [1, projection_dim]."""
    x = resize(rgb, model.config.image_size, resize_mode)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    dtype = next(model.parameters()).dtype
    return model(pixel_values=((x - mean) / std).to(dtype)).image_embeds
