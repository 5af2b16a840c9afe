"""Benchmark of recon: time and accuracy of NeuS with prior init + occupancy skipping vs without.

    OMP_NUM_THREADS=2 python bench/recon.py [--views 16] [--size 256] [--steps 400] [--shape blob|torus]

Prints one block of figures: for the fast configuration (SDF initialised from a smoothed,
inflated copy of the ground truth as the prior; nerfacc occupancy grid + early ray
termination), the same without a prior (initialised from the masks' visual hull), and the
baseline (sphere init, every cell marched, ``--baseline-steps``): wall time, chamfer (% of bbox diagonal), normal consistency, held-out PSNR, samples
per ray; the speed ratio; texture bake + export time; peak RSS. Targets (issue 4): chamfer
≤ 0.5 %, PSNR ≥ 28 dB, ≤ 90 s on 2 cores, ≥ 3× faster than the baseline at equal accuracy.

``--bake-compare`` (issue 13) instead fits once and textures the same recon mesh twice in one
run: with the bake recon had before issue 13 (xatlas on the full mesh, ``recon.texture.bake_from_views``,
colour-field fill, ``recon.uv.dilate``) and with today's (``recon.mesh.bake_texture``: xatlas on
a proxy, ``recon.bake``), each followed by the GLB/OBJ export; prints recon end to end (fit +
mesh + texture) for both and the ratio (target ≥ 1.5×), with the held-out PSNR of each GLB's content.
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


def _old_bake_texture(vertices, faces, views, size: int, colour_fn):
    """recon's texture step before issue 13 (``recon.mesh.bake_texture`` at 256be01^ … cb7eefe^):
    xatlas on the full mesh, ``bake_from_views``, the colour field for unseen texels, 8 px dilation."""
    import numpy as np

    from recon.texture import bake_from_views, texel_geometry
    from recon.uv import dilate, unwrap

    vmap, faces_uv, uvs = unwrap(vertices, faces, resolution=size)
    v_new = vertices[vmap]
    texture, weight = bake_from_views(v_new, faces_uv, uvs, faces_uv, views, size)
    geo = texel_geometry(v_new, faces_uv, uvs, faces_uv, size)
    unseen = weight[geo.rows, geo.cols] <= 0
    if unseen.any():
        texture[geo.rows[unseen], geo.cols[unseen]] = colour_fn(geo.points[unseen])
    covered = np.zeros(weight.shape, bool)
    covered[geo.rows, geo.cols] = True
    texture = dilate(texture, covered, pixels=8)
    return v_new, faces_uv, uvs, (np.clip(texture, 0, 1) * 255 + 0.5).astype(np.uint8)


def bake_compare(mesh, work: Path, steps: int, n_views: int, size: int) -> None:
    """Fit once; texture the same mesh with the old and the new bake; print both and the ratio."""
    import time

    from recon import mesh as meshing
    from recon.api import extract_mesh, fit
    from recon.dataset import load_transforms

    config = ReconConfig(steps=steps)
    train = harness.cameras(n_views, size)
    held = harness.cameras(4, size, offset=360.0 / n_views / 2 + 7.0)
    path = harness.write_dataset(mesh, train, work)
    t0, c0 = time.perf_counter(), time.process_time()
    views = load_transforms(path)
    fitted = fit(views, config, harness.smoothed_prior(mesh))
    v, f = extract_mesh(fitted, config)
    fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"fit + mesh (shared by both): {fit_wall:.1f} s wall, {fit_cpu:.1f} s CPU; {len(f)} faces; "
          f"texture {config.texture_size}²", flush=True)
    bake_views = [(img, cam, m > 0.5) for img, cam, m in zip(views.images, views.cameras, views.masks)]
    rows = {}
    for name in ("old", "new"):
        t, c = time.perf_counter(), time.process_time()
        if name == "old":
            v2, f2, uvs, tex = _old_bake_texture(v, f, bake_views, config.texture_size, fitted.colour_world)
            cover = None
        else:
            v2, f2, uvs, tex, cover, _ = meshing.bake_texture(v, f, bake_views, config.texture_size,
                                                              fitted.colour_world, config.uv_layout,
                                                              config.unwrap_faces)
        meshing.export(work / name, "mesh", v2, f2, uvs, tex, cover)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rows[name] = (fit_wall + wall, fit_cpu + cpu)
        label = "before issue 13 (bake_from_views + dilate)" if name == "old" else "recon.bake (today)"
        print(f"{label:44s}: texture + export {wall:6.1f} s wall, {cpu:6.1f} s CPU; recon end to end "
              f"{rows[name][0]:6.1f} s wall, {rows[name][1]:6.1f} s CPU; held-out PSNR of the GLB content "
              f"{harness.psnr_textured(v2, f2, uvs, tex, mesh, held):.2f} dB", flush=True)
    print(f"recon end to end, old / new: {rows['old'][0] / rows['new'][0]:.2f}x wall, "
          f"{rows['old'][1] / rows['new'][1]:.2f}x CPU (target ≥ 1.5x)", flush=True)


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
    ap.add_argument("--bake-compare", action="store_true",
                    help="recon end to end with the bake before issue 13 vs today's, one fit, same run")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    mesh = harness.blob() if args.shape == "blob" else harness.torus()
    if args.mesh is not None:
        mesh, args.shape = harness.load_textured(args.mesh), args.mesh.name
    print(f"recon bench: {args.shape}, {args.views} views @ {args.size}px, torch threads {torch.get_num_threads()}")
    if args.bake_compare:
        with tempfile.TemporaryDirectory() as tmp:
            bake_compare(mesh, Path(tmp), args.steps, args.views, args.size)
        return
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
