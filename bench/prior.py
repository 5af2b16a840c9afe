"""Benchmark: the embedded default end to end (``gen3dface generate`` on the portrait).

Prints the median wall time over N runs of the real CLI subprocess, each stage's median
from result.json, and the peak RSS of the engine process (the maximum over runs, from
``resource.getrusage(RUSAGE_CHILDREN)``). Targets (issue 3): ≤ 20 s median, ≤ 4 GB RSS.

    .venv/bin/python bench/prior.py [--runs 5] [--views 16] [--resolution 512]
"""
from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        walls, stages = [], {}
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine", "generate", str(photo), "-o", str(out), "--backend",
                            "projection", "--views", str(args.views), "--resolution", str(args.resolution)],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
            for name, seconds in json.loads((out / "result.json").read_text())["timings"].items():
                stages.setdefault(name, []).append(seconds)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"generate (projection, {args.views} views @{args.resolution}), {args.runs} runs")
    print(f"  wall median {statistics.median(walls):.2f} s  (min {min(walls):.2f}, max {max(walls):.2f}; "
          "includes interpreter start-up and imports)")
    for name, values in stages.items():
        print(f"  stage {name:<11} median {statistics.median(values):.2f} s")
    print(f"  peak RSS {peak_mb:.0f} MB")
    print(f"  vs targets: wall {statistics.median(walls) / 20:.2f}x of 20 s, RSS {peak_mb / 4096:.2f}x of 4 GB")


if __name__ == "__main__":
    main()
