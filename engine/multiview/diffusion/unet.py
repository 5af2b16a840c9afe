"""One UNet pass over all views with the depth-wise volume conditions.

diffusers' ``UNet2DConditionModel`` runs unchanged except that, as in SyncDreamer's
``DepthWiseAttention``, a ``DepthTransformer`` is applied after the middle block and after
every decoder layer of the up blocks that have attention. diffusers' own forward has no
hook between the layers of an up block, so this walks its sub-modules in the same order
(down blocks → mid block → per-layer up blocks → out conv). Supported block types: the
Stable Diffusion ones (CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn,
UpBlock2D, CrossAttnUpBlock2D).
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from .attention import MultiViewAttnProcessor
from .conditioner import MultiViewConditioner, condition_slots


def self_attention_layers(unet: UNet2DConditionModel) -> list:
    """The UNet's self-attention modules (``attn1``), in diffusers' order."""
    return [m for name, m in unet.named_modules() if name.endswith("attn1")]


def install_processors(unet: UNet2DConditionModel, processor: MultiViewAttnProcessor, gates=None) -> None:
    """Every attention layer of ``unet`` uses ``processor`` (joint in self-attention); ``gates``: one
    joint-attention gate per self-attention layer (``ConditionerConfig.joint_gate_layers``) or None."""
    unet.set_attn_processor(processor)
    if gates is not None:
        layers = self_attention_layers(unet)
        if len(layers) != gates.numel():
            raise ValueError(f"{gates.numel()} joint-attention gates for {len(layers)} self-attention layers")
        processor.gates = {id(m): (gates, i) for i, m in enumerate(layers)}


def _run_up_block(block, h, skips, emb, context, kwargs, conditions, volume):
    """Layers of one up block; ``conditions``: one DepthTransformer per layer, or None."""
    attentions = getattr(block, "attentions", None)
    for i, resnet in enumerate(block.resnets):
        h = torch.cat([h, skips[-1]], 1)
        skips = skips[:-1]
        h = resnet(h, emb)
        if attentions is not None:
            h = attentions[i](h, encoder_hidden_states=context, cross_attention_kwargs=kwargs, return_dict=False)[0]
        if i == len(block.resnets) - 1 and block.upsamplers is not None:
            for up in block.upsamplers:
                h = up(h)
        if conditions is not None:
            h = conditions[i](h, volume[h.shape[-1]])
    return h, skips


def unet_forward(
    unet: UNet2DConditionModel,
    cond: MultiViewConditioner,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    volume: dict[int, torch.Tensor],
    n_views: int,
    n_refs: int | None = None,
) -> torch.Tensor:
    """Noise prediction for a batch of views.

    sample: [B·S, in_channels, r, r] (noisy latent ⊕ input latent); timesteps: [B·S];
    context: [B·S, 1, context_dim]; volume: {width: [n, C, D, width, width]} frustum features of
    the first n ≤ B·S batch rows, the others have a zero volume (CFG's unconditional half);
    n_views: S, views per sample that attend to each other; n_refs: the last views of each sample that
    are references (None: the input view when the conditioner runs it). With
    ``causal_reference`` on, references attend only to references. Returns [B·S, 4, r, r].
    """
    cfg = cond.config
    if n_refs is None:
        n_refs = int(cfg.include_input_view)
    kwargs = {"n_views": n_views, "n_refs": n_refs if getattr(cfg, "causal_reference", False) else 0}
    emb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
    h = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(h, temb=emb, encoder_hidden_states=context, cross_attention_kwargs=kwargs)
        else:
            h, res = block(h, temb=emb)
        skips += res
    h = unet.mid_block(h, emb, encoder_hidden_states=context, cross_attention_kwargs=kwargs)
    h = cond.middle_conditions(h, volume[h.shape[-1]])
    per_block: dict[int, list] = {}
    slots = condition_slots(cond.config.unet_block_out_channels, cond.config.unet_layers_per_block, cond.latent)
    for k, (b, _, _, _) in enumerate(slots):
        per_block.setdefault(b, []).append(cond.output_conditions[k])
    for b, block in enumerate(unet.up_blocks):
        h, skips = _run_up_block(block, h, skips, emb, context, kwargs, per_block.get(b), volume)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)
