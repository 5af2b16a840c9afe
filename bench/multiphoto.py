"""Benchmark: what a second photo at 45° adds to the side views, per skin tone.

    .venv/bin/python bench/multiphoto.py [--tones I III IV V VI] [--side 45]

On the project's synthetic head (``tests/engine/synthetic_heads``: the template textured
from the bundled portrait, toned to each Fitzpatrick albedo, with a mark only its +X side
shows), photos are rendered at 0° and at ``--side``; the embedded default runs on the front
photo alone and on both (preprocess, shape fit, projection), and the PSNR of its side views
(azimuth 30–105°, head pixels) and of the front view against the true renders is printed,
with the gain and the CPU time of each projection. The same measurement as
``tests/engine/test_multiphoto.py::test_a_side_photo_improves_the_side_views`` (tone IV).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDE_AZIMUTHS = (30, 45, 60, 75, 90, 105)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tones", nargs="+", default=["I", "III", "IV", "V", "VI"])
    p.add_argument("--side", type=float, default=45.0, help="azimuth of the second photo (degrees)")
    args = p.parse_args()

    from PIL import Image

    import tests.engine.synthetic_heads as syn
    from engine import multiphoto, preprocess, prior
    from engine.context import RunContext
    from engine.multiview import projection

    work = Path(tempfile.mkdtemp(prefix="multiphoto-bench-"))
    (work / "truth").mkdir()
    truth = syn.truth_head(work / "truth")
    for tone in args.tones:
        marked = syn.with_side_mark(syn.toned(truth, syn.SKIN_TONES[tone]))
        photos = [syn.photo(marked, 0.0), syn.photo(marked, args.side)]
        scores = {}
        for k in (1, 2):
            run = work / f"{tone}_{k}"
            run.mkdir()
            paths = []
            for i, image in enumerate(photos[:k]):
                paths.append(run / f"photo_{i}.png")
                Image.fromarray(image).save(paths[-1])
            ctx = RunContext()
            pres = multiphoto.preprocess_all(paths, run, preprocess.PreprocessConfig(size=256), ctx)
            head, extras = multiphoto.fit_prior(pres, run, prior.PriorConfig(model="template"), ctx)
            cfg = projection.ProjectionConfig(n_views=4, size=64, texture_size=512, supersample=1)
            c0 = time.process_time()
            res = projection.run(pres[0][1].crop, head, run, cfg, ctx, landmarks=pres[0][1].landmarks_crop,
                                 extras=extras)
            cpu = time.process_time() - c0
            scores[k] = (syn.view_psnr(head, res, marked, SIDE_AZIMUTHS), syn.view_psnr(head, res, marked, (0,)), cpu)
        (s1, f1, c1), (s2, f2, c2) = scores[1], scores[2]
        print(f"tone {tone:>3}: side views {s1:.2f} → {s2:.2f} dB ({s2 - s1:+.2f}); front {f1:.2f} → {f2:.2f} dB; "
              f"projection CPU {c1:.1f} / {c2:.1f} s", flush=True)


if __name__ == "__main__":
    main()
