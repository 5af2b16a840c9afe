"""Writing a multi-view set: ``views/view_XXX.png`` (RGBA) + ``transforms.json``.

Every backend ends here, so the recon stage and the add-on read one format: nerfstudio's
``transforms.json`` in the Blender world (docs/architecture.md, "Conventions"). The input camera is
stored beside the frames as ``input_frame`` so the add-on can place it with the photo.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from recon.cameras import Camera, to_transforms


def write_views(
    run_dir: Path,
    images: list[np.ndarray],
    cameras: list[Camera],
    input_camera: Camera | None = None,
    input_image: str = "input/crop.png",
    extra: dict | None = None,
) -> Path:
    """Write the views and their cameras; return the path of transforms.json.

    images: N arrays [h, w, 4] uint8 (RGBA, straight alpha).
    cameras: N cameras, one per image.
    """
    if len(images) != len(cameras):
        raise ValueError(f"{len(images)} images for {len(cameras)} cameras")
    views_dir = run_dir / "views"
    views_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        rel = f"views/view_{i:03d}.png"
        # compress_level 1: 3x faster than the default, ~10 % larger files
        Image.fromarray(np.ascontiguousarray(image), "RGBA").save(run_dir / rel, compress_level=1)
        paths.append(rel)
    meta = to_transforms(cameras, paths, extra)
    if input_camera is not None:
        c = input_camera
        meta["input_frame"] = {
            "file_path": input_image,
            "transform_matrix": c.c2w.tolist(),
            "fl_x": float(c.fx), "fl_y": float(c.fy), "cx": float(c.cx), "cy": float(c.cy),
            "w": int(c.w), "h": int(c.h),
        }
    path = run_dir / "transforms.json"
    path.write_text(json.dumps(meta, indent=1))
    return path
