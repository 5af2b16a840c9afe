"""Toy-scale training benchmark (not part of the test run): does the model learn, and does joint attention help?

1. a synthetic head set (engine/dataset/synthetic.py) → ``dataset build`` (the engine's own prior);
2. the tiny model trained from the same seeded initialisation with joint attention on and off,
   each for ``--minutes`` of wall time (the issue allows 30 on a quiet 2-core machine);
3. evaluated on held-out identities: the denoising loss at fixed timesteps (trained vs untrained)
   and PSNR/SSIM of generated views against the true renders and against the VAE's own
   reconstruction of them (the tiny VAE is random and frozen: that is the ceiling here).

    PYTHONPATH=. OMP_NUM_THREADS=2 python -m bench.train_small --work /tmp/train_small --minutes 3 [--conditioning identity_token]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _data(work: Path, n_ids: int, n_views: int) -> Path:
    from engine.context import RunContext
    from engine.dataset.build import BuildConfig, build
    from engine.dataset.synthetic import SyntheticConfig, make_set

    t = time.perf_counter()
    make_set(work / "renders", SyntheticConfig(n_identities=n_ids, n_views=n_views, size=128, seed=11))
    man = build(work / "renders", work / "dataset", BuildConfig(crop_size=128, prior_model="template"),
                RunContext(models_dir=work / "no_models"))
    print(f"data: {man['counts']} in {time.perf_counter() - t:.0f} s; skipped: {[s['id'] for s in man['skipped']]}")
    return work / "dataset"


def _eval_loss(model, data, ids, timesteps=(100, 500, 900)) -> dict:
    out = {}
    with torch.no_grad():
        for t in timesteps:
            vals = []
            for k, i in enumerate(ids):
                s = data.load(i, torch.Generator().manual_seed(1000 + k))
                vals.append(float(model([s], 0.0, torch.tensor([t]))))
            out[t] = float(np.mean(vals))
    return out


def _psnr_ssim(pipe, data, ids, steps: int) -> dict:
    from skimage.metrics import peak_signal_noise_ratio as psnr
    from skimage.metrics import structural_similarity as ssim

    from engine.train.validate import generate_views

    res = {"psnr_true": [], "ssim_true": [], "psnr_vae": []}
    for i in ids:
        gen, true = generate_views(pipe, data, i, 4, steps)
        g = gen[..., :3].astype(np.float64) / 255
        with torch.no_grad():
            x = torch.from_numpy(true).permute(0, 3, 1, 2).float()
            z = pipe.vae.encode(x * 2 - 1).latent_dist.mode()
            rec = (pipe.vae.decode(z).sample * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for a, b, r in zip(g, true, rec):
            res["psnr_true"].append(psnr(b, a, data_range=1.0))
            res["ssim_true"].append(ssim(b, a, data_range=1.0, channel_axis=-1))
            res["psnr_vae"].append(psnr(r, a, data_range=1.0))
    return {k: float(np.mean(v)) for k, v in res.items()}


def _variant(dataset: Path, work: Path, joint: bool, minutes: float, args) -> dict:
    from accelerate.state import AcceleratorState

    from engine.train.config import TrainConfig
    from engine.train.data import TrainSet
    from engine.train.loop import build_pipeline, train
    from engine.train.objective import TrainModel

    cfg = TrainConfig(model="tiny", image_size=64, n_targets=4, batch_size=2, max_steps=100000, checkpoint_every=25,
                      validate_every=0, tracker="none", val_items=args.held_out, seed=5, joint_attention=joint,
                      other_lr=5e-4, unet_lr=2e-4, warmup_steps=20, unet_lr_start=1e-6, cond_dropout=0.05,
                      conditioning=tuple(args.conditioning))
    identity = "identity_token" in cfg.conditioning
    if identity:
        from engine.dataset.identity import ensure_identities

        ensure_identities(dataset)
    data = TrainSet(dataset, 64, 4, cfg.seed, cfg.val_items, identity=identity)
    untrained = TrainModel(build_pipeline(cfg))
    before = _eval_loss(untrained, data, data.val_ids)
    AcceleratorState._reset_state(True)
    out = work / f"run_joint_{'on' if joint else 'off'}"
    t0, steps, rate = time.perf_counter(), 0, None
    while steps < args.steps and time.perf_counter() - t0 < minutes * 60:
        r = train(dataset, out, cfg, stop_after=min(25, args.steps - steps))  # each call ends on a checkpoint
        steps, rate = r.step, r.seconds_per_step
    pipe = build_pipeline(cfg)
    from engine.train.state import latest_checkpoint

    trained = TrainModel(pipe)
    from weights.safeload import load_safetensors

    trained.load_state_dict(load_safetensors(latest_checkpoint(out) / "training" / "trainable.safetensors"))
    after = _eval_loss(trained, data, data.val_ids)
    quality = _psnr_ssim(pipe, data, data.val_ids, args.sample_steps)
    quality_untrained = _psnr_ssim(untrained.frozen.pipe, data, data.val_ids, args.sample_steps)
    return {"joint_attention": joint, "steps": steps, "s_per_step": rate, "loss_untrained": before,
            "loss_trained": after, "generated_trained": quality, "generated_untrained": quality_untrained}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("/tmp/train_small"))
    p.add_argument("--identities", type=int, default=10)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--held-out", type=int, default=2)
    p.add_argument("--minutes", type=float, default=5.0, help="training wall-time cap per variant")
    p.add_argument("--steps", type=int, default=75, help="optimiser steps per variant (equal for both; a multiple of 25)")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--conditioning", nargs="*", default=[], help="TrainConfig.conditioning, e.g. identity_token")
    args = p.parse_args()
    torch.manual_seed(0)
    dataset = _data(args.work, args.identities, args.views)
    results = [_variant(dataset, args.work, joint, args.minutes, args) for joint in (True, False)]
    print(json.dumps(results, indent=1))
    (args.work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
