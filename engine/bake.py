"""``gen3dface bake RUN_DIR --mesh MESH -o OUT``: a run's views baked onto the artist's own mesh.

1. the run: ``transforms.json`` + views (``recon.dataset``), and its head (``mesh/head.glb``,
   else ``prior/head.glb``) for ``--align auto``;
2. the mesh (OBJ, GLB/glTF, PLY) with its own UVs: glTF and OBJ are read Y-up (their
   convention; Blender writes them so) and mapped into the run's world (Z up), PLY is read
   as it is (Blender writes PLY Z-up);
3. alignment: ``none`` (the mesh already sits in the run's world, e.g. placed in Blender)
   or ``auto`` (``engine.landmark_align``: mediapipe landmarks on the run's views and on
   renders of the mesh (its own texture, else shaded), robust Umeyama, trimmed ICP against
   the run's head; the shape-only ``recon.align.auto_align`` competes by ICP residual and is
   the fallback, warning ``align_no_landmarks``, when either side shows no face);
4. one bake per UDIM tile (1001 + u-tile + 10 · v-tile, tiles 1001-1010 and up) with
   ``recon.bake`` (per face: overlapping and mirrored islands take their own surface's
   colours; push-pull autofill);
5. OUT/: ``<stem>_basecolor[.<tile>].png`` (+ ``_coverage`` masks), ``<stem>.obj/.mtl``
   (the mesh as read, one material per tile using its texture; a GLB too for a glTF input
   with one tile) and ``bake.json``; written in a temporary folder renamed into place.
Bad inputs exit 2 naming the file; nothing is written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .context import RunContext
from .errors import BadInput

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply")
#: glTF / OBJ (Y up) → Blender world (Z up): (x, y, z) ↦ (x, −z, y).
YUP_TO_WORLD = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def add_parser(sub):
    """Register ``bake`` on the CLI's subparsers; returns its parser (the CLI adds the common options)."""
    p = sub.add_parser("bake", help="a run's views → texture on your own mesh (its UVs)")
    p.add_argument("run_dir", type=Path, help="a Gen3D Face run directory (transforms.json + views)")
    p.add_argument("--mesh", type=Path, required=True, help="your mesh with UVs (OBJ, GLB/glTF, PLY)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to create for the textures and mesh")
    p.add_argument("--align", choices=("none", "auto"), default="none",
                   help="none: the mesh is in the run's world; auto: fit it onto the run's head")
    p.add_argument("--size", type=int, default=2048, help="texture size per tile (1024-8192)")
    p.add_argument("--angle-strictness", type=float, default=2.0, help="p in the view weight cos^p")
    p.add_argument("--edge-expansion", type=int, default=8, help="texels of padding around UV islands")
    p.add_argument("--no-equalize", action="store_true", help="no brightness/colour equalisation across views")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth (sRGB)")
    return p


def _texture_of(mesh) -> np.ndarray | None:
    """The mesh's own base-colour image as float32 [H, W, 3] in [0, 1] (sRGB), or None."""
    material = getattr(getattr(mesh, "visual", None), "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        return None
    try:
        return np.asarray(image.convert("RGB"), np.float32) / 255
    except (OSError, ValueError, AttributeError):  # a texture that cannot be decoded: shaded instead
        return None


def load_user_mesh(path: Path, with_texture: bool = False):
    """(vertices [V, 3] run world, faces [F, 3], uvs [V, 2], texture) of a mesh file; texture:
    its base colour (float32 [H, W, 3]) with ``with_texture`` when it has one, else None;
    BadInput otherwise."""
    import trimesh

    if not path.is_file():
        raise BadInput(path, "file not found" if not path.exists() else "not a regular file", "not_found")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise BadInput(path, f"not a mesh file (expected {', '.join(MESH_SUFFIXES)})", "bad_mesh")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise BadInput(path, f"cannot read the mesh ({type(exc).__name__}: {exc})", "bad_mesh") from None
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), np.int64)
    if isinstance(mesh, trimesh.Scene) or len(faces) == 0:
        raise BadInput(path, "the mesh is empty (no faces)", "empty_mesh")
    uv = getattr(getattr(mesh, "visual", None), "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise BadInput(path, "the mesh has no UV coordinates (unwrap it first)", "no_uvs")
    v = np.asarray(mesh.vertices, np.float64)
    if path.suffix.lower() != ".ply":
        v = v @ YUP_TO_WORLD.T
    if not np.isfinite(v).all() or not np.isfinite(uv).all():
        raise BadInput(path, "the mesh has non-finite coordinates", "bad_mesh")
    return v, faces, np.asarray(uv, np.float64), _texture_of(mesh) if with_texture else None


def udim_tiles(uvs: np.ndarray, faces: np.ndarray) -> dict[int, np.ndarray]:
    """{tile: face indices}: the UDIM tile (1001 + u-tile + 10 · v-tile) of every face's UV centroid."""
    c = uvs[faces].mean(1)
    tu, tv = np.floor(c[:, 0]).astype(int), np.floor(c[:, 1]).astype(int)
    tile = 1001 + tu + 10 * tv
    bad = (tu < 0) | (tu > 9) | (tv < 0)
    tile[bad] = 1001  # outside the UDIM grid: wrapped into the first tile
    return {int(t): np.nonzero(tile == t)[0] for t in np.unique(tile)}


def _run_views(run_dir: Path):
    from recon.dataset import load_transforms
    from recon.errors import ReconInputError

    if not run_dir.is_dir():
        raise BadInput(run_dir, "run directory not found", "not_found")
    transforms = run_dir / "transforms.json"
    if not transforms.is_file():
        raise BadInput(transforms, "the run has no views (transforms.json missing)", "no_views")
    try:
        views = load_transforms(transforms)
    except ReconInputError as exc:
        raise BadInput(exc.path, exc.reason, "bad_views") from None
    return [(img, cam, m > 0.5) for img, cam, m in zip(views.images, views.cameras, views.masks)]


def _run_head(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from recon.api import load_prior
    from recon.errors import ReconInputError

    for rel in ("mesh/head.glb", "prior/head.glb"):
        if (run_dir / rel).is_file():
            try:
                return load_prior(run_dir / rel)
            except ReconInputError as exc:
                raise BadInput(exc.path, exc.reason, "bad_mesh") from None
    raise BadInput(run_dir / "mesh" / "head.glb", "--align auto needs the run's head mesh", "no_head")


def _write_obj(path: Path, v_file: np.ndarray, faces: np.ndarray, uvs: np.ndarray, tiles: dict, names: dict) -> None:
    """OBJ in the file's own axes, one material per tile (UVs kept: the tile offset wraps)."""
    lines = [f"mtllib {path.stem}.mtl", f"o {path.stem}"]
    lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in v_file.tolist()]
    lines += [f"vt {a!r} {b!r}" for a, b in uvs.tolist()]
    mtl = []
    for tile, idx in tiles.items():
        lines.append(f"usemtl tile_{tile}")
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (faces[idx] + 1).tolist()]
        mtl += [f"newmtl tile_{tile}", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1", "Pr 0.6", "Pm 0",
                f"map_Kd {names[tile]}", ""]
    (path.with_suffix(".mtl")).write_text("\n".join(mtl))
    path.write_text("\n".join(lines) + "\n")


def bake_command(args, ctx: RunContext) -> dict:
    """Run ``gen3dface bake``; returns bake.json's content (+ ``output``)."""
    from recon.bake import BakeConfig, bake
    from recon.export import to_srgb_pixels, write_glb, write_png

    t0 = time.perf_counter()
    out = Path(os.path.abspath(args.output))
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise BadInput(out, "output exists and is not empty; pass --overwrite to replace it", "output_exists")
    try:
        config = BakeConfig(size=args.size, angle_strictness=args.angle_strictness,
                            edge_expansion=args.edge_expansion, equalize=not args.no_equalize)
    except ValueError as exc:
        raise BadInput(None, str(exc), "bad_option") from None
    run_dir = Path(args.run_dir)
    views = _run_views(run_dir)
    # the texture only helps find the face on renders of the mesh
    v, f, uvs, texture = load_user_mesh(Path(args.mesh), with_texture=args.align == "auto")
    align = {"mode": args.align}
    v_world = v
    if args.align == "auto":
        from .landmark_align import align as landmark_align

        head = _run_head(run_dir)
        ctx.progress(0, 1, "aligning")
        found = landmark_align(v, f, uvs, texture, views, *head, warn=ctx.warn, cancel=ctx.check_cancelled)
        v_world = found.similarity.apply(v)
        align.update(found.report)
    ctx.check_cancelled()
    tiles = udim_tiles(uvs, f)
    t_load = time.perf_counter()
    stem = Path(args.mesh).stem
    udim = len(tiles) > 1 or next(iter(tiles)) != 1001
    names, stats = {}, {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for k, (tile, idx) in enumerate(tiles.items()):
            ctx.progress(k, len(tiles), f"baking tile {tile}")
            offset = np.array([(tile - 1001) % 10, (tile - 1001) // 10], np.float64)
            r = bake(v_world, f[idx], uvs - offset, f[idx], views, config)
            suffix = f".{tile}" if udim else ""
            names[tile] = f"{stem}_basecolor{suffix}.png"
            write_png(tmp / names[tile], to_srgb_pixels(r.texture, args.bits))
            tex8 = to_srgb_pixels(r.texture, 8)
            write_png(tmp / f"{stem}_coverage{suffix}.png", (r.seen * 255).astype(np.uint8))
            stats[str(tile)] = {"coverage": r.coverage, "autofilled": r.autofilled, "seconds": r.seconds}
            ctx.check_cancelled()
        v_file = v if Path(args.mesh).suffix.lower() == ".ply" else v @ YUP_TO_WORLD  # back to the file's axes
        _write_obj(tmp / f"{stem}.obj", v_file, f, uvs, tiles, names)
        if not udim and Path(args.mesh).suffix.lower() in (".glb", ".gltf"):
            write_glb(tmp / f"{stem}.glb", v, f, uvs, tex8)  # glTF embeds 8-bit images
        seen = sum(s["coverage"] for s in stats.values()) / len(stats)
        result = {"mesh": str(Path(args.mesh).resolve()), "run_dir": str(run_dir.resolve()), "alignment": align,
                  "size": args.size, "bits": args.bits, "tiles": stats, "textures": list(names.values()),
                  "coverage": seen, "autofilled": sum(s["autofilled"] for s in stats.values()) / len(stats),
                  "config": {"angle_strictness": config.angle_strictness, "edge_expansion": config.edge_expansion,
                             "equalize": config.equalize},
                  "warnings": list(ctx.warnings),
                  "timings": {"load_align": t_load - t0, "total": time.perf_counter() - t0}}
        (tmp / "bake.json").write_text(json.dumps(result, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    outputs = {"mesh_obj": f"{stem}.obj", "bake": "bake.json"} | {f"texture_{t}": n for t, n in names.items()}
    return {**result, "run_dir": str(out), "manifest": "bake.json", "outputs": outputs}
