"""Attention pieces: depth-wise volume attention and the multi-view attention processor.

* ``DepthTransformer`` (SyncDreamer): every latent pixel attends over the D depth samples
  of its own frustum ray; injected after the UNet's middle and decoder blocks.
* ``MultiViewAttnProcessor``: a diffusers attention processor. In self-attention layers
  the tokens of all views of one sample (targets + input) form one sequence, so every
  view is denoised jointly in one pass (Gen3D-Face §3.2, "3D self attention among all the
  novel views and the input"). Cross-attention is unchanged. Installed with
  ``unet.set_attn_processor``; the view count arrives per call through
  ``cross_attention_kwargs={"n_views": S}``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def pixel_major(context: torch.Tensor) -> torch.Tensor:
    """The same [b, C, D, h, w] tensor stored as [b, h, w, D, C] in memory (a copy unless it already is).

    The depth attention reads each pixel's D×C block contiguously; the frustum features of
    one level feed several DepthTransformers, so they are converted once per step.
    """
    return context.permute(0, 3, 4, 2, 1).contiguous().permute(0, 4, 3, 1, 2)


class DepthAttention(nn.Module):
    """Query from a 2D map, keys/values from the matching frustum volume, softmax over depth.

    Computed without materialising keys and values: q·(W_k c) = (W_kᵀ q)·c and
    Σ_d a_d (W_v c_d) = W_v (Σ_d a_d c_d), per head. The projections act per latent pixel
    (h·w of them) instead of per frustum sample (D·h·w), the same function as SyncDreamer's
    ``DepthAttention`` up to float rounding; the weights keep their 1×1-conv keys and shapes.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int, output_bias: bool = True):
        super().__init__()
        inner = heads * dim_head
        self.scale = dim_head ** -0.5
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Conv2d(query_dim, inner, 1, 1, bias=False)
        self.to_k = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_v = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_out = nn.Conv2d(inner, query_dim, 1, 1, bias=output_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: [b, C, h, w]; context: [b·h·w, D, Cv] (pixel-major, see ``DepthTransformer``) → [b, C, h, w]."""
        b, _, h, w = x.shape
        heads, dh, cv = self.heads, self.dim_head, context.shape[-1]
        q = self.to_q(x).permute(0, 2, 3, 1).reshape(b * h * w, heads, dh)
        wk = self.to_k.weight.reshape(heads, dh, cv).to(q.dtype)
        qk = torch.einsum("phd,hdc->phc", q, wk) * self.scale  # [p, heads, Cv]
        attn = torch.bmm(context, qk.transpose(1, 2)).softmax(dim=1)  # [p, D, heads]
        mixed = torch.bmm(attn.transpose(1, 2), context)  # [p, heads, Cv]
        wv = self.to_v.weight.reshape(heads, dh, cv).to(q.dtype)
        out = torch.einsum("phc,hdc->phd", mixed, wv).reshape(b, h, w, heads * dh).permute(0, 3, 1, 2)
        return self.to_out(out)


class DepthTransformer(nn.Module):
    """Residual depth-wise attention block (SyncDreamer's names: proj_in, proj_context, depth_attn, proj_out)."""

    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int):
        super().__init__()
        inner = n_heads * d_head
        self.proj_in = nn.Sequential(nn.Conv2d(dim, inner, 1, 1), nn.GroupNorm(8, inner), nn.SiLU())
        # no bias and ReLU: a zero volume (dropped condition) gives a zero context
        self.proj_context = nn.Sequential(
            nn.Conv3d(context_dim, context_dim, 1, 1, bias=False), nn.GroupNorm(8, context_dim), nn.ReLU()
        )
        self.depth_attn = DepthAttention(inner, context_dim, n_heads, d_head, output_bias=False)
        self.proj_out = nn.Sequential(
            nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
            nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, dim, 3, 1, 1, bias=False),
        )
        nn.init.zeros_(self.proj_out[-1].weight)  # starts as identity, like zero_module

    def project_context(self, context: torch.Tensor) -> torch.Tensor:
        """``proj_context`` (1×1 conv, GroupNorm, ReLU) in pixel-major layout: [b, C, D, h, w] → [b·h·w, D, C].

        Free of copies when ``context`` is stored pixel-major (``pixel_major``); GroupNorm's
        statistics do not depend on the layout, so this is ``proj_context(context)`` permuted.
        """
        conv, norm, _ = self.proj_context
        b, c, d, h, w = context.shape
        y = F.linear(context.permute(0, 3, 4, 2, 1), conv.weight.reshape(c, c))  # [b, h, w, D, C]
        # [b, C, h, w, D] view of a channels-last tensor: GroupNorm's channels-last kernel, no copy
        y = F.group_norm(y.permute(0, 4, 1, 2, 3), norm.num_groups, norm.weight, norm.bias, norm.eps)
        return F.relu(y.permute(0, 2, 3, 4, 1)).reshape(b * h * w, d, c)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: [b, dim, h, w]; context: [n ≤ b, context_dim, D, h, w] (best stored ``pixel_major``).

        Rows n.. of ``x`` get a zero volume (classifier-free guidance's unconditional branch).
        A zero volume projects to the same context at every sample, so the softmax over depth
        is uniform and returns that context: one depth sample per item gives the same result
        as D·h·w of them.
        """
        n, m = context.shape[0], x.shape[0] - context.shape[0]
        q = self.proj_in(x)
        h = self.depth_attn(q[:n], self.project_context(context)) if n else None
        if m > 0:
            r2 = x.shape[-2] * x.shape[-1]
            zero = self.project_context(context.new_zeros(m, context.shape[1], 1, 1, 1))  # [m, 1, C]
            h0 = self.depth_attn(q[n:], zero.repeat_interleave(r2, 0))
            h = h0 if h is None else torch.cat([h, h0])
        return self.proj_out(h) + x


class MultiViewAttnProcessor:
    """SDPA attention; self-attention joins the ``n_views`` consecutive batch items of a sample.

    joint: off → plain per-view attention (the ablation in the tests).
    max_tokens: joint attention only where a view has ≤ this many tokens (0: everywhere);
        a memory/speed knob, the highest-resolution layers cost the most (O((S·L)²)).
    slice_size: queries per SDPA call (attention slicing to bound memory); None = all at once.
    n_refs (per call): the last n_refs views of a sample are references (the input view, extra photos);
        > 0 makes joint attention causal (``causal_mask``).
    """

    def __init__(self, joint: bool = True, max_tokens: int = 0, slice_size: int | None = None):
        self.joint, self.max_tokens, self.slice_size = joint, max_tokens, slice_size
        self.gates: dict[int, tuple[torch.Tensor, int]] = {}  # id(attn) → (gates, index): gated joint attention

    def _sdpa(self, q, k, v, mask=None):
        if not self.slice_size or q.shape[2] <= self.slice_size:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        parts = [F.scaled_dot_product_attention(q[:, :, i:i + self.slice_size], k, v,
                                                attn_mask=None if mask is None else mask[i:i + self.slice_size])
                 for i in range(0, q.shape[2], self.slice_size)]
        return torch.cat(parts, 2)

    @staticmethod
    def causal_mask(n_views: int, tokens: int, n_refs: int, device) -> torch.Tensor:
        """[S·L, S·L] bool, True = may attend: the last ``n_refs`` views (the input and other references)
        query only reference tokens, the targets query everything (causal reference attention, seed 003)."""
        is_ref = torch.arange(n_views * tokens, device=device) // tokens >= n_views - n_refs
        return ~is_ref[:, None] | is_ref[None, :]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, n_views: int = 1,
                 n_refs: int = 0):
        residual = hidden_states
        ndim = hidden_states.ndim
        if ndim == 4:
            b4, c4, h4, w4 = hidden_states.shape
            hidden_states = hidden_states.view(b4, c4, h4 * w4).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        is_self = encoder_hidden_states is None
        context = hidden_states if is_self else encoder_hidden_states
        if not is_self and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if not is_self and context.shape[1] == 1 and attention_mask is None:
            # one key (SyncDreamer's context is one token per view): its softmax weight is exactly 1,
            # so attention returns the value; q, k and the SDPA call are skipped
            return self._single_key(attn, context, residual, ndim, batch, tokens)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        joint = is_self and self.joint and n_views > 1 and (self.max_tokens <= 0 or tokens <= self.max_tokens)
        groups = batch // n_views if joint else batch
        if joint and batch % n_views:
            raise ValueError(f"batch {batch} is not a multiple of n_views {n_views}")
        head_dim = q.shape[-1] // attn.heads

        def heads(t):  # [batch, L, H·d] → [groups, H, (batch/groups)·L, d]
            return t.reshape(groups, -1, attn.heads, head_dim).transpose(1, 2)

        mask = self.causal_mask(n_views, tokens, n_refs, q.device) if joint and n_refs > 0 else None
        out = self._sdpa(heads(q), heads(k), heads(v), mask)
        out = out.transpose(1, 2).reshape(batch, tokens, attn.heads * head_dim).to(q.dtype)
        gate = self.gates.get(id(attn)) if joint else None
        if gate is not None:  # per-view + g·(joint − per-view): g = 0 is the per-view model
            def own(t):  # [batch, L, H·d] → [batch, H, L, d]
                return t.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

            solo = self._sdpa(own(q), own(k), own(v)).transpose(1, 2).reshape(batch, tokens, -1).to(q.dtype)
            out = solo + gate[0][gate[1]].to(q.dtype) * (out - solo)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b4, c4, h4, w4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    @staticmethod
    def _single_key(attn, context, residual, ndim, batch, tokens):
        """Cross-attention over a single context token: [batch, 1, C] → every query's output."""
        out = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # [batch, 1, C], the same for all queries
        if ndim == 4:
            out = out.transpose(1, 2)[..., None].expand(residual.shape)
        else:
            out = out.expand(batch, tokens, -1)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
