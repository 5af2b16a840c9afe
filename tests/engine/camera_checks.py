"""Each written view is tied to its own camera: a shape seen in a view lands where that
view's ``transforms.json`` frame says.

The projection is written here from the documented convention (nerfstudio frames in the
Blender world: ``transform_matrix`` = camera-to-world, OpenGL camera axes, +X right, +Y up,
looking down −Z; continuous pixel coordinates, rows downward), independently of
``recon.cameras``, so it checks the writers rather than repeating them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def project(frame: dict, meta: dict, points: np.ndarray) -> np.ndarray:
    """points [P, 3] in the world → pixel positions [P, 2] (column, row) in ``frame``'s view."""
    get = lambda k: frame.get(k, meta.get(k))  # noqa: E731 - per-frame intrinsics override the shared ones
    c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    r, t = c2w[:3, :3], c2w[:3, 3]
    cam = (points - t) @ r  # world → camera: Rᵀ (p − t), row-vector form
    depth = -cam[:, 2]
    assert (depth > 0).all(), "the object is behind the camera"
    u = get("cx") + get("fl_x") * cam[:, 0] / depth
    v = get("cy") - get("fl_y") * cam[:, 1] / depth
    return np.stack([u, v], 1)


def frame_of(camera) -> dict:
    """A ``transforms.json`` frame for a ``recon.cameras.Camera`` (its public fields only)."""
    return {"transform_matrix": np.asarray(camera.c2w).tolist(), "fl_x": camera.fx, "fl_y": camera.fy,
            "cx": camera.cx, "cy": camera.cy, "w": camera.w, "h": camera.h}


def alpha_box_gap(alpha: np.ndarray, frame: dict, meta: dict, points: np.ndarray, dilate_px: float = 0.0) -> float:
    """Checks that the projected ``points`` [P, 3] lie inside ``alpha`` [h, w] (bool) and returns
    how far (px) the alpha's bounding box is from the points' projected box grown by ``dilate_px``."""
    uv = project(frame, meta, points)
    h, w = alpha.shape
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, h - 1)
    inside = alpha[row, col].mean()
    assert inside > 0.98, (frame.get("file_path"), inside)
    rows, cols = np.nonzero(alpha)
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)
    expected = np.r_[uv.min(0) - dilate_px, uv.max(0) + dilate_px]
    return float(np.abs(box - expected).max())


def assert_views_match_cameras(run_dir: Path, points: np.ndarray, slack_px: float = 1.5,
                               dilate_px: float = 0.0) -> list[float]:
    """For every frame: the projected ``points`` [P, 3] lie inside the view's alpha, and the
    alpha's bounding box is the points' projected box, grown by ``dilate_px`` (a silhouette
    dilated for hair), within ``slack_px``.

    Returns each frame's largest box difference in pixels.
    """
    meta = json.loads((Path(run_dir) / "transforms.json").read_text())
    gaps = []
    for frame in meta["frames"]:
        alpha = np.asarray(Image.open(Path(run_dir) / frame["file_path"]))[..., 3] > 127
        gap = alpha_box_gap(alpha, frame, meta, points, dilate_px)
        assert gap < slack_px, (frame["file_path"], gap)
        gaps.append(gap)
    return gaps
