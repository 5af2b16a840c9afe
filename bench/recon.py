"""Benchmark of recon: time and accuracy of NeuS with prior init + occupancy skipping vs without.

    OMP_NUM_THREADS=2 python bench/recon.py [--views 16] [--size 256] [--steps 400] [--shape blob|torus]

Prints one block of figures: for the fast configuration (SDF initialised from a smoothed,
inflated copy of the ground truth as the prior; nerfacc occupancy grid + early ray
termination) and the baseline (sphere init, every cell marched) at the same number of
steps: wall time, chamfer (% of bbox diagonal), normal consistency, held-out PSNR, samples
per ray; the speed ratio; texture bake + export time; peak RSS. Targets (issue 4): chamfer
≤ 0.5 %, PSNR ≥ 28 dB, ≤ 90 s on 2 cores, ≥ 3× faster than the baseline at equal accuracy.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
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
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(2)
    mesh = harness.blob() if args.shape == "blob" else harness.torus()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fast = ReconConfig(steps=args.steps)
        t0 = time.perf_counter()
        rows["prior+occupancy"] = harness.run(mesh, work / "fast", fast, args.views, args.size, prior=True,
                                              texture=True)
        rows["prior+occupancy"]["wall"] = time.perf_counter() - t0
        rss_fast = _rss_mb()
        tex_s = rows["prior+occupancy"]["texture_seconds"]
        if not args.skip_baseline:
            base = ReconConfig(steps=args.baseline_steps or args.steps, occupancy=False, texture=False)
            t0 = time.perf_counter()
            rows["baseline"] = harness.run(mesh, work / "base", base, args.views, args.size, prior=False)
            rows["baseline"]["wall"] = time.perf_counter() - t0
    print(f"recon bench: {args.shape}, {args.views} views @ {args.size}px, torch threads {torch.get_num_threads()}")
    print(f"{'config':18s} {'steps':>6s} {'fit+mesh s':>10s} {'train s':>8s} {'chamfer %':>9s} {'normal':>7s} "
          f"{'PSNR':>6s} {'PSNR fg':>7s} {'samp/ray':>8s}")
    for name, r in rows.items():
        steps = args.steps if name != "baseline" else (args.baseline_steps or args.steps)
        print(f"{name:18s} {steps:6d} {r['seconds']:10.1f} {r['train_seconds']:8.1f} {r['chamfer_pct']:9.3f} "
              f"{r['normal_consistency']:7.4f} {r['psnr']:6.2f} {r['psnr_fg']:7.2f} {r['samples_per_ray']:8.1f}")
    f = rows["prior+occupancy"]
    print(f"texture bake {fast.texture_size}² + GLB/OBJ export: {tex_s:.1f} s; "
          f"total with texture ≈ {f['seconds'] + tex_s:.1f} s (target ≤ 90 s)")
    if "baseline" in rows:
        b = rows["baseline"]
        equal = b["chamfer_pct"] <= f["chamfer_pct"] * 1.1 and b["psnr"] >= f["psnr"] - 0.5
        print(f"speed-up (baseline / prior+occupancy, fit+mesh): {b['seconds'] / f['seconds']:.1f}x "
              f"({'baseline reached equal accuracy' if equal else 'baseline is LESS accurate: the ratio is a lower bound'})")
    print(f"peak RSS: {rss_fast:.0f} MB after the fast run, {_rss_mb():.0f} MB overall")
    ok = f["chamfer_pct"] <= 0.5 and f["psnr"] >= 28
    print(f"targets: chamfer ≤ 0.5 % and PSNR ≥ 28 dB: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
