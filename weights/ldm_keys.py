"""Key-mapping tables: ldm (CompVis / SyncDreamer / Morphable) names ↔ our model folder.

UNet and VAE follow diffusers' module tree; the maps are generated from a config by walking
the ldm block numbering (``input_blocks.{1 + level·(L+1) + layer}``, ``output_blocks.{…}``,
``middle_block.{0,1,2}``; VAE ``encoder.down.{i}.block.{j}``, ``decoder.up.{n−1−i}``).
A test cross-checks them against diffusers' own single-file converters.
"""
from __future__ import annotations

import re

#: ldm ResBlock (UNet) → diffusers ResnetBlock2D.
UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
#: ldm VAE ResnetBlock → diffusers.
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
#: ldm VAE AttnBlock → diffusers Attention (1×1 conv weights become linear weights).
VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}

#: Conditioner keys: checkpoint prefix → our ``conditioner/`` prefix (SyncDreamer & Morphable).
CONDITIONER_PREFIXES = {
    "time_embed.": "time_embed.",
    "cc_projection.": "cc_projection.",
    "spatial_volume.": "spatial_volume.",
    "model.diffusion_model.middle_conditions.": "middle_conditions.",
    "model.diffusion_model.output_conditions.": "output_conditions.",
}
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
#: Checkpoint entries we do not carry: CLIP (use the transformers CLIP ViT-L/14 folder), the
#: noise schedule buffers (scheduler config) and the fixed camera buffers (our layouts).
DROPPED_PREFIXES = ("clip_image_encoder.", "model_ema.", "betas", "alphas", "alphas_cumprod", "sqrt_", "posterior_",
                    "poses", "Ks", "azimuth", "log_one_minus", "sqrt_recip")


def unet_ldm_name(key: str, cfg: dict) -> str:
    """The ldm name of a diffusers UNet2DConditionModel key (SD-style block types)."""
    L = cfg["layers_per_block"]
    n = len(cfg["block_out_channels"])
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for d, l_ in fixed.items():
        if key.startswith(d + "."):
            return l_ + key[len(d):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if m:
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * (L + 1) + L}.0.op.{rest.split('.', 1)[1]}"
        idx = 1 + b * (L + 1) + i
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        kind, i, rest = m[1], int(m[2]), m[3]
        return f"middle_block.{2 * i}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        has_attn = "CrossAttn" in cfg["up_block_types"][b]
        if kind == "upsamplers":
            return f"output_blocks.{b * (L + 1) + L}.{2 if has_attn else 1}.{rest}"
        idx = b * (L + 1) + i
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    raise KeyError(f"no ldm name for UNet key {key!r} ({n} levels)")


def _resnet(rest: str) -> str:
    head, _, tail = rest.rpartition(".")
    inverse = {v: k for k, v in UNET_RESNET.items()}
    return f"{inverse[head]}.{tail}"


def vae_ldm_name(key: str, cfg: dict) -> str:
    """The ldm name of a diffusers AutoencoderKL key."""
    n = len(cfg["block_out_channels"])
    m = re.match(r"(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        part, _, b, kind, j, rest = m[1], m[2], int(m[3]), m[4], m[5], m[6]
        level = b if part == "encoder" else n - 1 - b
        group = "down" if part == "encoder" else "up"
        if kind == "resnets":
            head, _, tail = rest.rpartition(".")
            inverse = {v: k for k, v in VAE_RESNET.items()}
            return f"{part}.{group}.{level}.block.{j}.{inverse[head]}.{tail}"
        return f"{part}.{group}.{level}.{'downsample' if kind == 'downsamplers' else 'upsample'}.{rest}"
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        part, kind, i, rest = m[1], m[2], int(m[3]), m[4]
        head, _, tail = rest.rpartition(".")
        if kind == "resnets":
            name = {v: k for k, v in VAE_RESNET.items()}[head]
            return f"{part}.mid.block_{i + 1}.{name}.{tail}"
        name = {v: k for k, v in VAE_ATTN.items()}[head]
        return f"{part}.mid.attn_1.{name}.{tail}"
    for d, l_ in (("encoder.conv_norm_out", "encoder.norm_out"), ("decoder.conv_norm_out", "decoder.norm_out")):
        if key.startswith(d + "."):
            return l_ + key[len(d):]
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def is_vae_attention_matrix(key: str) -> bool:
    """ldm stores the VAE mid attention's q/k/v/proj_out as 1×1 convs, diffusers as linears."""
    return bool(re.search(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key))
