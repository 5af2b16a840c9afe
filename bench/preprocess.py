"""Benchmark: the preprocess stage on the bundled portrait.

Prints the first call (mediapipe graphs created), the median of N warm calls, and the
process's peak RSS. Issue 2 asks for the median of 5.

    .venv/bin/python bench/preprocess.py [--runs 5]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    from PIL import Image
    from skimage import data

    from engine import preprocess
    from engine.context import RunContext

    t_import = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        config = preprocess.PreprocessConfig()
        times = []
        for i in range(args.runs + 1):
            t = time.perf_counter()
            preprocess.run(photo, Path(tmp) / f"run{i}", config, RunContext())
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"preprocess on the portrait (512x512), {args.runs} warm runs")
    print(f"  imports {t_import:.2f} s, first call {times[0]:.3f} s")
    print(f"  median {statistics.median(times[1:]):.3f} s (min {min(times[1:]):.3f}, max {max(times[1:]):.3f})")
    print(f"  peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
