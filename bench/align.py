"""Benchmark of ``bake --align auto`` (engine/landmark_align.py) on known similarities.

    OMP_NUM_THREADS=2 python bench/align.py [--trials 4] [--seed 1] [--cases plain plinth front other untextured]

The run: the synthetic textured head of the tests (``tests/engine/synthetic_heads.truth_head``,
the template textured from the bundled portrait), 8 lit views of 256² around it. The
artist's mesh, with the head's texture, in a random frame: a uniform random rotation, scale
0.5-3 (log-uniform), shift up to 1 m per axis. Cases:

- plain: the same head;
- plinth: the head standing on a box (extra geometry, a third of the area);
- front: only the front half of the head (y < −2 cm);
- other: another identity (the template with random shape coefficients, N(0, σ²), σ =
  ``--shape-sigma``, 1 by default): the true
  transform is the applied one, the surfaces differ (RMS vertex offset printed);
- untextured: the same head without texture (rendered shaded).

Prints one line per trial (method, rotation error, point error, wall/CPU time of the whole
alignment) and a summary per case: trials within 1 mm and 1°. The point error is the largest
distance, over the mesh's vertices, between where they were and where the estimated map
puts their moved copies (for "other": at the head's centre, the shapes differ elsewhere).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cases", nargs="+", default=["plain", "plinth", "front", "other", "untextured"])
    p.add_argument("--shape-sigma", type=float, default=1.0, help="std of the other identity's shape coefficients")
    args = p.parse_args()

    import torch
    import trimesh
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    import tests.engine.synthetic_heads as syn
    from engine.landmark_align import align
    from engine.multiview._shade import render_rgba
    from engine.prior.template import TemplateHead
    from recon.cameras import orbit_camera

    truth = syn.truth_head(Path(tempfile.mkdtemp(prefix="align-bench-")))
    v, f, uvs, tex = truth.vertices, truth.faces, truth.uvs, truth.texture
    views = []
    for i in range(8):
        cam = orbit_camera(360.0 * i / 8, 20.0 * np.sin(np.pi * i / 4 + 0.5), 0.7, 30.0, 256)
        rgba = render_rgba(v, f, uvs, truth.normals, tex, cam, ambient=0.45, ss=1, closed=True)
        views.append((rgba[..., :3].astype(np.float32) / 255, cam, rgba[..., 3] > 127))

    rng = np.random.default_rng(args.seed)
    model = TemplateHead()
    with torch.no_grad():
        mean = model.vertices(torch.zeros(model.n_shape), torch.zeros(model.n_expr)).numpy().astype(np.float64)
    split = cKDTree(mean).query(v)[1]  # the truth head's (UV-split) vertices → template vertices

    def mesh(case):
        if case == "plinth":
            box = trimesh.creation.box(extents=(0.36, 0.26, 0.12)).subdivide().subdivide()
            bv = np.asarray(box.vertices) + np.array([0.0, 0.03, -0.25])
            return (np.vstack([v, bv]), np.vstack([f, np.asarray(box.faces) + len(v)]),
                    np.vstack([uvs, np.full((len(bv), 2), 0.02)]), tex, True)
        if case == "front":
            keep = v[f].mean(1)[:, 1] < -0.02
            used = np.unique(f[keep])
            remap = np.full(len(v), -1)
            remap[used] = np.arange(len(used))
            return v[used], remap[f[keep]], uvs[used], tex, True
        if case == "other":
            with torch.no_grad():
                other = model.vertices(torch.as_tensor(rng.normal(0, args.shape_sigma, model.n_shape), dtype=torch.float32),
                                       torch.zeros(model.n_expr)).numpy().astype(np.float64)[split]
            print(f"  other identity: RMS vertex offset {1000 * np.sqrt(((other - v) ** 2).sum(1).mean()):.1f} mm")
            return other, f, uvs, tex, False
        return v, f, uvs, (None if case == "untextured" else tex), True

    summary = {}
    for case in args.cases:
        rows = []
        for _ in range(args.trials):
            mv, mf, mu, mt, same = mesh(case)
            rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
            scale = float(np.exp(rng.uniform(np.log(0.5), np.log(3.0))))
            shift = rng.uniform(-1, 1, 3)
            moved = scale * mv @ rot.T + shift
            t0, c0 = time.perf_counter(), time.process_time()
            found = align(moved, mf, mu, mt, views, v, f)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            m = found.similarity.matrix
            r_est = m[:3, :3] / found.similarity.scale
            deg = float(np.degrees(np.arccos(np.clip((np.trace(r_est @ rot) - 1) / 2, -1, 1))))
            if same:
                err = float(np.abs(moved @ m[:3, :3].T + m[:3, 3] - mv).max())
            else:
                err = float(np.linalg.norm(m[:3, :3] @ shift + m[:3, 3]))  # the head's centre (origin)
            row = dict(case=case, angle=round(float(np.degrees(Rotation.from_matrix(rot).magnitude())), 1),
                       scale=round(scale, 2), method=found.method, seed=found.report.get("landmark_seed"),
                       deg=round(deg, 3), err_mm=round(1000 * err, 3),
                       landmark_rms_mm=round(found.report.get("landmark_rms_mm", float("nan")), 2),
                       landmark_fit_rms_mm=round(found.report.get("landmark_fit_rms_mm", float("nan")), 2),
                       residual_mm=round(found.report["residual_mm"], 3), wall_s=round(wall, 2), cpu_s=round(cpu, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
        ok = sum(r["deg"] < 1 and r["err_mm"] < 1 for r in rows)
        summary[case] = dict(within_1mm_1deg=f"{ok}/{len(rows)}",
                             landmarks=sum(r["method"] == "landmarks" for r in rows),
                             max_deg=max(r["deg"] for r in rows), max_err_mm=max(r["err_mm"] for r in rows),
                             median_wall_s=float(np.median([r["wall_s"] for r in rows])),
                             median_cpu_s=float(np.median([r["cpu_s"] for r in rows])))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
