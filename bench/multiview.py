"""Per-step time and peak memory of the joint multi-view model vs a bare diffusers UNet.

    python bench/multiview.py --config tiny --views 16 --size 256
    python bench/multiview.py --config full --views 4 --size 256 --guidance 1   (slow on CPU)

"Overhead" = one denoising step of the pipeline (volumes, frustum nets, depth attention,
joint attention, CFG) / one bare ``UNet2DConditionModel`` forward over the same batch
(default attention processor, no conditioner). Random weights. Prints wall time and the
process's CPU time per call: on a shared machine the CPU-time ratio is the steadier one.
Run the step and the bare forward back to back (this script does), one heavy run at a time.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall s, process CPU s) per call, after one warm-up call."""
    fn()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--joint-max-tokens", type=int, default=0, help="joint attention only at ≤ this many tokens/view")
    ap.add_argument("--chunk", type=int, default=4, help="views per call of the per-view nets (DiffusionConfig.views_per_chunk)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    from engine.multiview.diffusion.presets import full_pipeline, tiny_pipeline
    from engine.multiview.layouts import gen3dface
    from tests.engine.diffusion_fixtures import tiny_inputs

    make = tiny_pipeline if args.config == "tiny" else full_pipeline
    kw = dict(n_views=args.views, size=args.size, joint_attention_max_tokens=args.joint_max_tokens)
    if args.config == "tiny":
        kw["with_clip"] = False
    pipe = make(**kw)
    crop, cam, verts, faces = tiny_inputs(args.size)
    cams = gen3dface(args.views).cameras(args.size)
    emb = torch.randn(1, pipe.conditioner.config.clip_dim)
    cond = pipe.prepare_conditions(pipe.preprocess(crop), cam, verts, cams, emb)
    r = args.size // pipe.vae_scale_factor
    latents = torch.randn(args.views, 4, r, r)
    t = torch.tensor(500)
    step = _timed(lambda: pipe.predict_noise(latents, t, cond, args.guidance, args.chunk), args.repeats)
    peak_step = _peak_mb()

    s = cond.c2w.shape[0] * (2 if args.guidance != 1.0 else 1)
    x = torch.randn(s, pipe.unet.config.in_channels, r, r)
    ctx = torch.randn(s, 1, pipe.unet.config.cross_attention_dim)
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    bare = _timed(lambda: pipe.unet(x, torch.full((s,), 500), encoder_hidden_states=ctx).sample, args.repeats)
    print(f"config={args.config} views={args.views} size={args.size} guidance={args.guidance} unet_batch={s} "
          f"joint_max_tokens={args.joint_max_tokens}")
    print(f"step_s={step[0]:.3f} bare_unet_s={bare[0]:.3f} overhead_ratio={step[0] / bare[0]:.2f} "
          f"step_cpu_s={step[1]:.3f} bare_unet_cpu_s={bare[1]:.3f} cpu_ratio={step[1] / bare[1]:.2f} peak_rss_mb={peak_step:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
