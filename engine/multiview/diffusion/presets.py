"""Model configurations: a tiny one for tests/bench (random weights) and the full SD-1.5 size.

The full size is SyncDreamer's: SD-1.5 UNet with 8 input channels (noisy ⊕ input latent),
768-d cross-attention, the SD VAE and CLIP ViT-L/14.
"""
from __future__ import annotations

import dataclasses

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from . import clip
from .conditioner import MultiViewConditioner
from .config import ConditionerConfig
from .pipeline import MultiViewPipeline
from weights.architectures import SCHEDULER, SD15_UNET, SD_VAE  # noqa: F401 - re-exported

TINY_UNET = dict(
    sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
    block_out_channels=(8, 8, 8, 8), norm_num_groups=8, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)


def tiny_conditioner_config(n_views: int = 4, **overrides) -> ConditionerConfig:
    """A conditioner small enough for CPU tests (latent 8², volume 8³, 8 depth planes)."""
    base = ConditionerConfig(
        n_views=n_views, time_dim=32, clip_dim=32, context_dim=32, encoder_run_dim=8, encoder_dim=8,
        volume_size=8, frustum_depth=8, spatial_dims=(8, 8, 8, 8), sparse_dims=(8, 8, 8),
        frustum_dims=(8, 8, 16, 16), voxel_size=0.02, unet_block_out_channels=(32, 64), unet_layers_per_block=1,
    )
    return dataclasses.replace(base, **overrides)


def _randomise_zero_params(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Zero-initialised output convs make the depth attention a no-op; tests need it active."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def tiny_pipeline(seed: int = 0, n_views: int = 4, size: int = 64, with_clip: bool = True, **overrides) -> MultiViewPipeline:
    """Seeded random tiny model (diffusers' ``get_dummy_components`` pattern), on CPU, fp32."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = AutoencoderKL(**TINY_VAE)
    cfg = tiny_conditioner_config(n_views, **overrides)
    cond = MultiViewConditioner(cfg, latent=size // 8)
    _randomise_zero_params(cond, torch.Generator().manual_seed(seed + 1))
    encoder = clip.build(clip.tiny_config(cfg.clip_dim)) if with_clip and clip.available() else None
    return MultiViewPipeline(unet, vae, DDIMScheduler.from_config(SCHEDULER), cond, encoder, image_size=size)


def full_pipeline(n_views: int = 16, size: int = 256, with_clip: bool = False, **overrides) -> MultiViewPipeline:
    """The full-size architecture with random weights (for benchmarks and converters)."""
    unet = UNet2DConditionModel(**SD15_UNET)
    vae = AutoencoderKL(**SD_VAE)
    cfg = dataclasses.replace(ConditionerConfig(n_views=n_views), **overrides)
    cond = MultiViewConditioner(cfg, latent=size // 8)
    encoder = None
    if with_clip and clip.available():
        encoder = clip.build(dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"))
    return MultiViewPipeline(unet, vae, DDIMScheduler.from_config(SCHEDULER), cond, encoder, image_size=size)
