"""Headless batch: photos (or folders of photos) → one imported head collection each.

    blender -b -P blender_addon/batch.py -- PHOTO_OR_DIR... -o OUT [--save out.blend]
    python blender_addon/batch.py PHOTO_OR_DIR... -o OUT [--save out.blend]   # bpy module

Each photo runs the engine to the end (``OUT/<photo stem>`` is its run directory) and is
imported into a collection named after it. A summary follows; the exit code is 1 when
any photo failed, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def _argv() -> list[str]:
    """Our arguments: after ``--`` under Blender, else everything after the script."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1:]
    return sys.argv[1:]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="batch.py", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", type=Path, help="photos or folders of photos")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the run directories")
    p.add_argument("--save", type=Path, default=None, help="save the scene as this .blend at the end")
    p.add_argument("--engine-python", default="", help="the engine's Python (default: the add-on's setting, "
                   "$GEN3DFACE_PYTHON, else this Python)")
    p.add_argument("--backend", default="auto", choices=("auto", "projection", "diffusion"))
    p.add_argument("--views", type=int, default=None)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--recon", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--models-dir", default="")
    return p.parse_args(argv)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Photos in argument order; a folder contributes its images sorted by name."""
    photos = []
    for path in inputs:
        if path.is_dir():
            photos += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            photos.append(path)
    return photos


def _engine_python(given: str) -> str:
    if given:
        return given
    if os.environ.get("GEN3DFACE_PYTHON"):
        return os.environ["GEN3DFACE_PYTHON"]
    import bpy

    from blender_addon import client

    for name, addon in bpy.context.preferences.addons.items():  # an installed extension's settings
        if name.endswith(".gen3dface") and addon.preferences is not None:
            python = addon.preferences.engine_python or client.default_engine_python(
                bpy.utils.extension_path_user(name))
            if python:
                return python
    return sys.executable


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import bpy

    from blender_addon import jobs

    python = _engine_python(args.engine_python)
    photos = expand_inputs(args.inputs)
    if not photos:
        print("batch.py: no photos found", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for photo in photos:
        t0 = time.monotonic()
        values = {"photo": str(photo.resolve()), "output_dir": str(args.output.resolve()), "backend": args.backend,
                  "views": args.views, "resolution": args.resolution, "steps": args.steps,
                  "guidance": args.guidance, "seed": args.seed, "recon": args.recon}
        try:
            settings, name = jobs.make_settings(values, args.models_dir)
            imported = jobs.run_sync(bpy.context, python, settings, name)
            rows.append((photo, True, time.monotonic() - t0, imported.collection.name))
        except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the batch
            rows.append((photo, False, time.monotonic() - t0, str(exc)))
            print(f"gen3dface: {photo}: FAILED: {exc}", flush=True)
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=str(args.save.resolve()))
    failed = sum(not ok for _, ok, _, _ in rows)
    print(f"gen3dface batch: {len(rows) - failed} done, {failed} failed", flush=True)
    for photo, ok, seconds, what in rows:
        print(f"  {'ok  ' if ok else 'FAIL'} {seconds:7.1f} s  {photo}  {what}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    # Import the add-on as a package from the repository / extension root, not from its own folder.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.exit(main(_argv()))
