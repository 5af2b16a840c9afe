"""Scores and cost of the glasses and hat tests (engine.preprocess.glasses / hats).

    python bench/occluders.py [--size 512] [--calls 20] [--runs 5]

On the bundled portrait (skimage's astronaut: no glasses, no hat), on it with the tests'
glasses and cap drawn in (tests/engine/occluder_images.py) and on matplotlib's sample photo
of Grace Hopper (glasses and a cap): prints the glasses scores (bridge / rims relative to
the skin's luminance, threshold ``glasses.FRAME_SCORE``), the hat measurements, then the
median CPU and wall time of ``--calls`` calls of each test on the crop and of ``--runs``
whole warm preprocess runs with the occluder tests off and on (hands included).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import preprocess  # noqa: E402
from engine.context import RunContext  # noqa: E402
from engine.preprocess import glasses, hats, occluders  # noqa: E402


def _photos(work: Path) -> dict[str, Path]:
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    from engine.preprocess.detect import find_face
    from tests.engine import occluder_images as drawn

    portrait = data.astronaut()
    lm = find_face(portrait, Path("astronaut.png"))[0]
    images = {"portrait": portrait, "portrait+drawn": drawn.paint_cap(drawn.draw_glasses(portrait, lm), lm)}
    out = {}
    for name, im in images.items():
        out[name] = work / f"{name}.png"
        Image.fromarray(im).save(out[name])
    out["grace_hopper"] = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return out


def _median_times(fn, n: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(n):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return float(np.median(cpu)), float(np.median(wall))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, path in _photos(work).items():
            cfg_off = preprocess.PreprocessConfig(size=args.size, occluders=False)
            pre = preprocess.run(path, work / "run", cfg_off, RunContext())
            rgb = np.ascontiguousarray(pre.crop[..., :3])
            alpha = np.ascontiguousarray(pre.crop[..., 3])
            lm = pre.landmarks_crop
            g = glasses.detect(rgb, lm)
            h = hats.detect(rgb, alpha, lm)
            print(f"{name}: glasses {g.found} (sunglasses {g.sunglasses}) "
                  + " ".join(f"{k}={v:.3f}" for k, v in g.scores.items()))
            print(f"{name}: hat {h.found} {h.info}")
            t_hat = _median_times(lambda: occluders.remove_hat(rgb, alpha, lm, path, RunContext()), args.calls)
            t_gl = _median_times(lambda: occluders.remove_glasses(rgb, alpha, lm, path, RunContext()), args.calls)
            print(f"{name}: per call (median of {args.calls}) hat {1e3 * t_hat[0]:.0f} ms CPU / "
                  f"{1e3 * t_hat[1]:.0f} ms wall, glasses {1e3 * t_gl[0]:.0f} ms CPU / {1e3 * t_gl[1]:.0f} ms wall")
            for on in (False, True):
                cfg = preprocess.PreprocessConfig(size=args.size, occluders=on)
                cpu, wall = _median_times(lambda: preprocess.run(path, work / "run", cfg, RunContext()), args.runs)
                print(f"{name}: preprocess occluders={on} (median of {args.runs} warm runs) "
                      f"{cpu:.3f} s CPU / {wall:.3f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
