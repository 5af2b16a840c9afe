"""Reading a finished run directory for evaluation: input photo, views with their azimuths, ground truth.

A run is what ``generate`` writes (README, "Outputs"): ``result.json``, ``transforms.json``
whose frames name ``views/view_XXX.png``, and ``input/photo.png``. Ground-truth views, where
a run has them (synthetic heads, datasets), are ``ground_truth/<same file name>`` beside
``views/``: the real image seen from the same camera.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadInput


@dataclass(frozen=True)
class View:
    """One generated view: its file, camera azimuth/elevation in degrees (0 = front, Blender world),
    and the ground-truth image for the same camera when the run has one."""

    path: Path
    azimuth: float
    elevation: float
    ground_truth: Path | None = None


@dataclass(frozen=True)
class Run:
    """A complete run: directory, input photo, views in transforms.json order, generate's backend."""

    root: Path
    photo: Path
    views: list[View] = field(default_factory=list)
    backend: str = ""


def load_rgb(path: Path, background: int = 255) -> np.ndarray:
    """[H, W, 3] uint8; RGBA is composited over a flat background (views are rendered on none)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                flat = Image.new("RGBA", im.size, (background,) * 3 + (255,))
                im = Image.alpha_composite(flat, im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise BadInput(path, f"cannot read the image ({exc})", "bad_image") from None


def view_angles(frame: dict, index: int, transforms: dict, path: Path) -> tuple[float, float]:
    """(azimuth, elevation) in degrees of frame ``index``: transforms.json's lists, else its camera centre."""
    azimuths, elevations = transforms.get("azimuths"), transforms.get("elevations")
    if isinstance(azimuths, list) and isinstance(elevations, list) and index < min(len(azimuths), len(elevations)):
        return float(azimuths[index]), float(elevations[index])
    try:
        # Camera centre in the Blender world (face toward −Y): azimuth 0 in front, +90 at +X.
        x, y, z = (float(frame["transform_matrix"][r][3]) for r in range(3))
    except (KeyError, IndexError, TypeError, ValueError):
        raise BadInput(path, f"frame {index} has no usable transform_matrix", "bad_run") from None
    return math.degrees(math.atan2(x, -y)), math.degrees(math.atan2(z, math.hypot(x, y)))


def load_run(root: Path) -> Run:
    """The run at ``root``; ``BadInput`` naming the directory and what is missing otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(root, "not a run directory" if root.exists() else "run directory not found", "bad_run")
    if not (root / "result.json").is_file():
        raise BadInput(root, "incomplete run: no result.json (the run failed, is still running or is not a run)",
                       "bad_run")
    try:
        result = json.loads((root / "result.json").read_text())
        transforms = json.loads((root / "transforms.json").read_text())
    except FileNotFoundError as exc:
        raise BadInput(root, f"incomplete run: {Path(exc.filename).name} is missing", "bad_run") from None
    except (OSError, ValueError) as exc:
        raise BadInput(root, f"unreadable run manifest ({exc})", "bad_run") from None
    frames = transforms.get("frames")
    if not isinstance(frames, list) or not frames:
        raise BadInput(root / "transforms.json", "no frames", "bad_run")
    views = []
    for i, frame in enumerate(frames):
        rel = frame.get("file_path") if isinstance(frame, dict) else None
        path = root / str(rel)
        if not rel or not path.is_file():
            raise BadInput(root, f"incomplete run: view {rel or i} is missing", "bad_run")
        azimuth, elevation = view_angles(frame, i, transforms, root / "transforms.json")
        gt = root / "ground_truth" / path.name
        views.append(View(path, azimuth, elevation, gt if gt.is_file() else None))
    photo = root / result.get("outputs", {}).get("photo", "input/photo.png")
    if not photo.is_file():
        raise BadInput(root, "incomplete run: the input photo input/photo.png is missing", "bad_run")
    return Run(root, photo, views, str(result.get("backend", "")))
