"""Benchmark: ``gen3dface batch`` over N photos vs N separate ``gen3dface generate`` processes.

Photos: variants of skimage's astronaut (mirrored, cropped, darker) and matplotlib's Grace
Hopper, both public domain. Prints the wall time per photo of each way and the ratio; both
ways run the same generate options, into fresh output folders. Issue 12's target: batch is
faster per photo than separate calls.

    OMP_NUM_THREADS=1 .venv/bin/python bench/batch.py [--photos 4] [--resolution 512] [--views 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path, n: int) -> list[Path]:
    import matplotlib.cbook
    from skimage import data

    a = data.astronaut()
    hopper_jpg = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    hopper = np.asarray(Image.open(hopper_jpg).convert("RGB"))
    variants = [a, hopper, a[:, ::-1], (a * 0.8).astype(np.uint8), a[20:480, 30:490], hopper[:, ::-1]]
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:02d}.png"
        Image.fromarray(np.ascontiguousarray(variants[i % len(variants)])).save(path)
        paths.append(path)
    return paths


def _engine(*args) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--views", type=int, default=16)
    args = parser.parse_args()
    options = ["--resolution", args.resolution, "--views", args.views]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        photos = _photos(tmp / "photos", args.photos)
        t = time.perf_counter()
        for p in photos:
            _engine("generate", p, "-o", tmp / "separate" / p.stem, *options)
        separate = (time.perf_counter() - t) / len(photos)
        t = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "engine", "batch", tmp / "photos", "-o", tmp / "batch", "--json",
                              *map(str, options)], cwd=ROOT, env=env, capture_output=True, text=True)
        batch = (time.perf_counter() - t) / len(photos)
        summary = json.loads(out.stdout)
    print(f"{len(photos)} photos, --resolution {args.resolution} --views {args.views}")
    print(f"  separate generate processes: {separate:.2f} s per photo")
    print(f"  one batch process:           {batch:.2f} s per photo ({summary['counts']})")
    print(f"  batch / separate: {batch / separate:.2f}")
    print("  batch per-photo generate times:", [round(d["seconds"], 2) for d in summary["done"]])


if __name__ == "__main__":
    main()
