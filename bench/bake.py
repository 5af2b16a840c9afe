"""Benchmark of the texture bake (recon.bake) against today's recon bake (recon.texture).

    OMP_NUM_THREADS=2 python bench/bake.py [--views 16] [--view-size 512] [--faces 50000] [--sizes 1024 2048 4096]

A 50k-face closed mesh (an icosphere decimated, with a smooth colour pattern), ``--views``
views around it rendered from its true texture, an xatlas atlas; prints for every texture
size the new bake's wall time (split into its steps) and PSNR against the true texture in
the texels a view saw, then today's ``recon.texture.bake_from_views`` + ``recon.uv.dilate``
on the same atlas (xatlas on a 5k-face proxy) and the ratio, measured in the same run. Target (issue 13): 2048² from
16 views of 512² in ≤ 3 s on 2 cores.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recon.bake import BakeConfig, bake  # noqa: E402
from recon.cameras import orbit_camera  # noqa: E402
from recon.texture import bake_from_views, render_textured  # noqa: E402
from recon.uv import dilate  # noqa: E402
from recon.uv_transfer import proxy_unwrap  # noqa: E402


def pattern(points: np.ndarray) -> np.ndarray:
    k = 40.0
    return 0.5 + 0.35 * np.stack([np.sin(k * points[:, 0]), np.cos(k * points[:, 1]),
                                  np.sin(k * points[:, 2] + 1)], -1)


def scene(n_faces: int, n_views: int, view_size: int, atlas_size: int, sizes=(2048,)):
    import fast_simplification
    import trimesh

    from recon.bake import texel_samples

    s = trimesh.creation.icosphere(6, radius=0.1)
    s.vertices[:, 2] *= 1.25
    v, f = fast_simplification.simplify(s.vertices.astype(np.float32), s.faces, max(0.0, 1 - n_faces / len(s.faces)))
    v = v.astype(np.float64)
    t = time.perf_counter()
    vmap, faces_uv, uvs = proxy_unwrap(v, f, 5000, atlas_size)
    t_unwrap = time.perf_counter() - t
    vs = v[vmap]
    true = {}
    for size in sorted({2048, *sizes}):
        samp = texel_samples(vs, faces_uv, uvs, faces_uv, size)
        tex = np.zeros((size * size, 3), np.float32)
        tex[samp.pix.numpy()] = pattern(samp.points.numpy().astype(np.float64))
        true[size] = tex.reshape(size, size, 3)
    gt = true[2048]
    views = []
    for i in range(n_views):
        az, el = 360.0 * i / n_views, 25.0 * np.sin(2 * np.pi * i / n_views * 2)
        cam = orbit_camera(az, el, 0.5, 40, view_size)
        colour, covered = render_textured(vs, faces_uv, uvs, faces_uv, gt, cam)
        views.append((np.concatenate([colour, covered[..., None]], -1), cam, None))
    return vs, faces_uv, uvs, views, true, t_unwrap


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--view-size", type=int, default=512)
    ap.add_argument("--faces", type=int, default=50_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-old", action="store_true", help="skip today's bake (slow)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    v, f, uvs, views, true, t_unwrap = scene(args.faces, args.views, args.view_size, 2048, args.sizes)
    print(f"bake bench: {len(f)} faces, {args.views} views @ {args.view_size}², torch threads {args.threads}; "
          f"UV layout (xatlas on a 5k-face proxy, transferred) {t_unwrap:.1f} s (not in the figures below); "
          "the machine is shared with other jobs: figures vary", flush=True)
    new = {}
    for size in args.sizes:
        t, c = time.perf_counter(), time.process_time()
        r = bake(v, f, uvs, f, views, BakeConfig(size=size))
        new[size] = time.perf_counter() - t
        s = r.seconds
        print(f"recon.bake {size:5d}²: {new[size]:6.2f} s wall, {time.process_time() - c:6.2f} s CPU (samples {s['samples']:.2f}, views {s['views']:.2f}, "
              f"project {s['project']:.2f}, fill+pad {s['fill_pad']:.2f}); coverage {100 * r.coverage:.1f} %, "
              f"PSNR seen {psnr(r.texture, true[size], r.seen):.2f} dB", flush=True)
    if args.skip_old:
        return
    for size in [s for s in args.sizes if s <= 2048]:
        t, c = time.perf_counter(), time.process_time()
        tex, weight = bake_from_views(v, f, uvs, f, views, size)
        tex = dilate(tex, weight > 0, 8)
        old = time.perf_counter() - t
        print(f"recon.texture {size:5d}² (today's bake, same atlas): {old:6.2f} s wall, "
              f"{time.process_time() - c:6.2f} s CPU, PSNR seen "
              f"{psnr(tex, true[size], weight > 0):.2f} dB; new bake {old / new[size]:.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
