"""Benchmark: ``gen3dface eval`` on one run of 16 views with the dlib backend, end to end.

Times the whole command in a fresh process (start-up, model loading, 17 images) N times and
prints the median, plus the process CPU time, so a loaded machine shows as wall ≫ CPU.
The target (issue 12) is ≤ 5 s on 2 cores. Makes the run with ``gen3dface demo`` first
unless ``--run`` names one.

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval.py [--run RUN_DIR] [--runs 3]
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


def _engine(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: make one with demo)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or Path(tmp) / "demo"
        if args.run is None:
            _engine("demo", "-o", run)
        walls, cpus = [], []
        for i in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            _engine("eval", run, "-o", Path(tmp) / f"ev{i}")
            walls.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        report = json.loads((Path(tmp) / "ev0" / "eval.json").read_text())
    o = report["overall"]
    print(f"gen3dface eval, dlib backend, {o['views']} views, {args.runs} runs (fresh process each)")
    print(f"  wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); "
          f"CPU median {statistics.median(cpus):.2f} s")
    print(f"  faces found {o['faces_found']}/{o['views']}, I2O mean {o['i2o']['mean']}, "
          f"match rate {o['i2o']['match_rate']}, O2O mean {o['o2o_mean']}")


if __name__ == "__main__":
    main()
