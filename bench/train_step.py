"""One training step's time and peak memory on CPU (tiny and full-size configs), plus the static
memory of the paper's recipe per GPU counted from the full-size parameters (not in the test run).

    PYTHONPATH=. OMP_NUM_THREADS=2 python -m bench.train_step --dataset DATASET [--config tiny|full|count]
        [--n-targets N] [--size PX] [--batch B] [--checkpointing] [--precision no|bf16]

Each config runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def count_full(n_targets: int = 16, size: int = 256) -> dict:
    """Parameter counts of the full-size model, built on the meta device (no memory)."""
    import torch

    from engine.multiview.diffusion.presets import full_pipeline

    with torch.device("meta"):
        pipe = full_pipeline(n_views=n_targets, size=size)
    unet = sum(p.numel() for p in pipe.unet.parameters())
    cond = sum(p.numel() for p in pipe.conditioner.parameters())
    vae = sum(p.numel() for p in pipe.vae.parameters())
    trainable = unet + cond
    gib = 2 ** 30
    return {"unet_params": unet, "conditioner_params": cond, "vae_params": vae,
            # fp32 master weights + gradients + AdamW's two moments = 16 B per trainable parameter
            "static_gib_fp32_adamw": round((16 * trainable + 4 * vae) / gib, 2),
            # bf16 autocast keeps fp32 master weights: the same static memory
            "note": "static only (weights, grads, AdamW moments, frozen VAE; CLIP ViT-L/14 adds ~1.2 GB fp32)"}


def one_step(dataset: Path, config: str, out: Path, n_targets: int, size: int, batch: int,
             checkpointing: bool = False, precision: str = "no") -> dict:
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    cfg = TrainConfig(model=config, image_size=size, n_targets=n_targets, batch_size=batch, max_steps=2,
                      checkpoint_every=10 ** 6, validate_every=0, tracker="none", val_items=1, cond_dropout=0.0,
                      gradient_checkpointing=checkpointing, mixed_precision=precision)
    t = time.perf_counter()
    r = train(dataset, out, cfg, resume=False)
    return {"config": config, "n_targets": n_targets, "size": size, "batch": batch,
            "gradient_checkpointing": checkpointing, "mixed_precision": precision, "losses": r.losses,
            "s_per_step_mean_of_2": r.seconds_per_step, "total_s_incl_build": time.perf_counter() - t,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", type=Path)
    p.add_argument("--config", default="all", choices=("all", "tiny", "full", "count"))
    p.add_argument("--n-targets", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the UNet")
    p.add_argument("--precision", default="no", choices=("no", "bf16"), help="accelerate's autocast")
    p.add_argument("--out", type=Path, default=Path("/tmp/train_step"))
    a = p.parse_args()
    if a.config == "count":
        print(json.dumps(count_full()))
        return
    if a.config in ("tiny", "full"):
        nt = a.n_targets or (4 if a.config == "tiny" else 16)
        size = a.size or (64 if a.config == "tiny" else 256)
        print(json.dumps(one_step(a.dataset, a.config, a.out / a.config, nt, size, a.batch,
                                  a.checkpointing, a.precision)))
        return
    for cfg in ("count", "tiny"):
        cmd = [sys.executable, "-m", "bench.train_step", "--config", cfg] + (["--dataset", str(a.dataset)] if a.dataset else [])
        print(subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
