"""The fast forms of the depth attention and cross-attention equal their textbook forms (CPU, float64)."""
from __future__ import annotations

import os

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from engine.multiview.diffusion.attention import DepthTransformer, MultiViewAttnProcessor, pixel_major
from engine.multiview.diffusion.conditioner import view_chunks

torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS", "2"))))


def _reference_depth_transformer(dt: DepthTransformer, x, context):
    """SyncDreamer's DepthAttention: keys and values materialised per depth sample."""
    a, c = dt.depth_attn, dt.proj_context(context)
    b, _, h, w = x.shape
    d = c.shape[2]
    q = a.to_q(dt.proj_in(x)).reshape(b, a.heads, a.dim_head, 1, h, w)
    k = a.to_k(c).reshape(b, a.heads, a.dim_head, d, h, w)
    v = a.to_v(c).reshape(b, a.heads, a.dim_head, d, h, w)
    attn = ((q * k).sum(2, keepdim=True) * a.scale).softmax(dim=3)
    return dt.proj_out(a.to_out((v * attn).sum(3).reshape(b, -1, h, w))) + x


def _depth_block(seed=0):
    torch.manual_seed(seed)
    dt = DepthTransformer(32, 4, 8, 16).double().eval()
    with torch.no_grad():
        for p in dt.parameters():  # GroupNorm affine and the zero-initialised output conv: random
            p.copy_(torch.randn_like(p) * 0.3)
    return dt


@torch.no_grad()
def test_depth_transformer_equals_materialised_keys_and_values():
    dt = _depth_block()
    x = torch.randn(3, 32, 6, 5, dtype=torch.float64)
    ctx = torch.randn(3, 16, 7, 6, 5, dtype=torch.float64)
    ref = _reference_depth_transformer(dt, x, ctx)
    assert (ref - x).abs().max() > 0.1  # the block does something
    for c in (ctx, pixel_major(ctx)):
        torch.testing.assert_close(dt(x, c), ref, atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_missing_context_rows_are_a_zero_volume():
    """CFG's unconditional half passes no frustum features: same as an explicit zero volume."""
    dt = _depth_block(1)
    x = torch.randn(4, 32, 5, 5, dtype=torch.float64)
    ctx = torch.randn(2, 16, 6, 5, 5, dtype=torch.float64)
    full = torch.cat([ctx, torch.zeros_like(ctx)])
    ref = _reference_depth_transformer(dt, x, full)
    torch.testing.assert_close(dt(x, ctx), ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dt(x, ctx[:0]), _reference_depth_transformer(dt, x, torch.zeros_like(full)), atol=1e-10, rtol=1e-10)


@torch.no_grad()
def test_single_token_cross_attention_equals_sdpa():
    torch.manual_seed(0)
    attn = Attention(32, cross_attention_dim=24, heads=4, dim_head=8, residual_connection=True).double().eval()
    h = torch.randn(2, 10, 32, dtype=torch.float64)
    for ctx in (torch.randn(2, 1, 24, dtype=torch.float64), torch.randn(2, 3, 24, dtype=torch.float64)):
        ref = AttnProcessor2_0()(attn, h, encoder_hidden_states=ctx)
        torch.testing.assert_close(MultiViewAttnProcessor()(attn, h, encoder_hidden_states=ctx, n_views=2), ref)
    img = torch.randn(2, 32, 3, 4, dtype=torch.float64)  # 4-d input path
    ctx = torch.randn(2, 1, 24, dtype=torch.float64)
    ref = AttnProcessor2_0()(attn, img, encoder_hidden_states=ctx)
    torch.testing.assert_close(MultiViewAttnProcessor()(attn, img, encoder_hidden_states=ctx), ref)


def test_view_chunks_are_balanced_and_cover_every_view():
    assert sorted(s.stop - s.start for s in view_chunks(5, 4)) == [2, 3]  # not 4 + 1
    assert sorted(s.stop - s.start for s in view_chunks(17, 8)) == [5, 6, 6]
    assert [s.stop - s.start for s in view_chunks(4, 4)] == [4]
    for n, c in [(1, 1), (7, 3), (16, 5), (3, 10)]:
        sl = view_chunks(n, c)
        assert sl[0].start == 0 and sl[-1].stop == n and all(a.stop == b.start for a, b in zip(sl, sl[1:]))
        assert max(s.stop - s.start for s in sl) <= c
