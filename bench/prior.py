"""Benchmark: the embedded default end to end (``gen3dface generate`` on the portrait).

Prints the median wall time over N runs of the real CLI subprocess, each stage's median
from result.json, and the peak RSS of the engine process (the maximum over runs, from
``resource.getrusage(RUSAGE_CHILDREN)``). Targets (issue 3): ≤ 20 s median, ≤ 4 GB RSS.

    .venv/bin/python bench/prior.py [--runs 5] [--views 16] [--resolution 512] [--photos 1] [--cold]

``--photos N`` passes N photos of the portrait's person (the portrait, its mirror image, a
smaller copy, a 90° EXIF-rotated copy, …: the same face, so this measures time, not the
quality of new views). ``--cold`` gives every run an empty cache folder (a new machine)
after ``gen3dface warmup`` has NOT run; the CPU time (user + sys of the engine process) is
printed beside the wall time, because a loaded machine inflates the wall time only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--photos", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="an empty cache folder for every run")
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        photos = _photos(Path(tmp), data.astronaut(), args.photos)
        walls, cpus, stages = [], [], {}
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}"
            env = dict(os.environ, **({"XDG_CACHE_HOME": str(Path(tmp) / f"cache{i}")} if args.cold else {}))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine", "generate", *map(str, photos), "-o", str(out), "--backend",
                            "projection", "--views", str(args.views), "--resolution", str(args.resolution)],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            for name, seconds in json.loads((out / "result.json").read_text())["timings"].items():
                stages.setdefault(name, []).append(seconds)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"generate (projection, {args.views} views @{args.resolution}, {args.photos} photo(s)"
          f"{', cold cache' if args.cold else ''}), {args.runs} runs")
    print(f"  wall median {statistics.median(walls):.2f} s  (min {min(walls):.2f}, max {max(walls):.2f}; "
          "includes interpreter start-up and imports)")
    print(f"  CPU (user+sys) median {statistics.median(cpus):.2f} s  (per run: {', '.join(f'{c:.1f}' for c in cpus)})")
    for name, values in stages.items():
        print(f"  stage {name:<11} median {statistics.median(values):.2f} s")
    print(f"  peak RSS {peak_mb:.0f} MB")
    print(f"  vs targets: wall {statistics.median(walls) / 20:.2f}x of 20 s, RSS {peak_mb / 4096:.2f}x of 4 GB")


def _photos(folder: Path, rgb, n: int) -> list[Path]:
    """n photos of the portrait's person: the portrait, mirrored, smaller, EXIF-rotated, … (cycled)."""
    from PIL import Image

    base = Image.fromarray(rgb)
    variants = [("astronaut.png", base, None), ("mirrored.png", base.transpose(Image.FLIP_LEFT_RIGHT), None),
                ("small.jpg", base.resize((384, 384)), None), ("rotated.jpg", base.rotate(90, expand=True), 6)]
    out = []
    for i in range(n):
        name, im, orientation = variants[i % len(variants)]
        path = folder / f"{i:02d}_{name}"
        if orientation:
            exif = Image.Exif()
            exif[0x0112] = orientation
            im.save(path, quality=95, exif=exif)
        else:
            im.save(path)
        out.append(path)
    return out


if __name__ == "__main__":
    main()
