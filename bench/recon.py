"""Benchmark of recon: time and accuracy of NeuS with prior init + occupancy skipping vs without.

    OMP_NUM_THREADS=2 python bench/recon.py [--views 16] [--size 256] [--steps 400] [--shape blob|torus]

Prints one block of figures: for the fast configuration (SDF initialised from a smoothed,
inflated copy of the ground truth as the prior; nerfacc occupancy grid + early ray
termination), the same without a prior (initialised from the masks' visual hull), and the
baseline (sphere init, every cell marched, ``--baseline-steps``): wall time, chamfer (% of bbox diagonal), normal consistency, held-out PSNR, samples
per ray; the speed ratio; texture bake + export time; peak RSS. Targets (issue 4): chamfer
≤ 0.5 %, PSNR ≥ 28 dB, ≤ 90 s on 2 cores, ≥ 3× faster than the baseline at equal accuracy.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recon import harness  # noqa: E402
from recon.api import ReconConfig  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--baseline-steps", type=int, default=None, help="default: same as --steps")
    ap.add_argument("--shape", choices=("blob", "torus"), default="blob")
    ap.add_argument("--mesh", type=Path, default=None, help="a textured mesh file (e.g. a head) instead of --shape")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (1 is far faster when other processes load the cores)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    mesh = harness.blob() if args.shape == "blob" else harness.torus()
    if args.mesh is not None:
        mesh, args.shape = harness.load_textured(args.mesh), args.mesh.name
    print(f"recon bench: {args.shape}, {args.views} views @ {args.size}px, torch threads {torch.get_num_threads()}")
    print(f"{'config':16s} {'steps':>5s} {'fit+mesh s':>10s} {'s/step':>7s} {'chamfer %':>9s} {'normal':>7s} "
          f"{'PSNR':>6s} {'PSNR fg':>7s} {'samp/ray':>8s}", flush=True)
    rows = {}

    def show(name: str, steps: int, r: dict) -> None:
        print(f"{name:16s} {steps:5d} {r['seconds']:10.1f} {r['train_seconds'] / steps:7.3f} {r['chamfer_pct']:9.3f} "
              f"{r['normal_consistency']:7.4f} {r['psnr']:6.2f} {r['psnr_fg']:7.2f} {r['samples_per_ray']:8.1f}",
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fast = ReconConfig(steps=args.steps)
        f = rows["fast"] = harness.run(mesh, work / "fast", fast, args.views, args.size, prior=True, texture=True)
        show("prior+occupancy", args.steps, f)
        rss_fast = _rss_mb()
        print(f"textured mesh (exported GLB content) held-out PSNR: {f['psnr_textured']:.2f} dB", flush=True)
        print(f"texture bake {fast.texture_size}² + GLB/OBJ export: {f['texture_seconds']:.1f} s; total with "
              f"texture {f['seconds'] + f['texture_seconds']:.1f} s (target ≤ 90 s); peak RSS {rss_fast:.0f} MB",
              flush=True)
        prior_only = harness.surface_metrics(harness.smoothed_prior(mesh), (mesh.vertices, mesh.faces))
        print(f"the prior alone (smoothed, inflated 2 %): chamfer {prior_only['chamfer_pct']:.3f} %, "
              f"normal {prior_only['normal_consistency']:.4f}", flush=True)
        ok = f["chamfer_pct"] <= 0.5 and f["psnr"] >= 28
        print(f"targets chamfer ≤ 0.5 % and held-out PSNR ≥ 28 dB: {'met' if ok else 'MISSED'}", flush=True)
        hull = harness.run(mesh, work / "hull", ReconConfig(steps=args.steps, texture=False), args.views, args.size,
                           prior=False)
        show("hull+occupancy", args.steps, hull)
        if args.skip_baseline:
            return
        b_steps = args.baseline_steps or args.steps
        # the same NeuS without prior init (a sphere, as NeuS) and without occupancy skipping
        base = ReconConfig(steps=b_steps, occupancy=False, hull_init=False, texture=False)
        b = harness.run(mesh, work / "base", base, args.views, args.size, prior=False)
        show("baseline", b_steps, b)
    per_step = (b["train_seconds"] / b_steps) / (f["train_seconds"] / args.steps)
    equal = b["chamfer_pct"] <= f["chamfer_pct"] * 1.1 and b["psnr"] >= f["psnr"] - 0.5
    print(f"per-step speed-up (occupancy skipping): {per_step:.1f}x; wall (fit+mesh) ratio at these steps: "
          f"{b['seconds'] / f['seconds']:.1f}x")
    print("baseline " + ("reached equal accuracy" if equal else
                         "is LESS accurate at these steps: it needs more steps, so the speed-up is a lower bound"))
    print(f"peak RSS overall: {_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
