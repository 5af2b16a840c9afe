"""A finished run directory as plain data: no ``bpy`` (glTF-Blender-IO style).

``load_run`` reads ``result.json`` and ``transforms.json`` (nerfstudio convention in the
Blender world, docs/architecture.md "Conventions") into ``RunData``; ``scene_io`` turns that into
Blender objects. ``blender_camera`` is the camera formula of docs/architecture.md:
``sensor_fit='HORIZONTAL'``, ``sensor_width=36``, ``lens = fl_x·36/w``,
``shift_x = (w/2 − cx)/w``, ``shift_y = (cy − h/2)/w · fl_x/fl_y``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

SENSOR_WIDTH = 36.0


class RunFormatError(ValueError):
    """A run directory that cannot be imported; the message is ``<file>: <reason>``."""


@dataclass(frozen=True)
class ViewCamera:
    """One camera of a run.

    name: object name (``view_000``, ``input``).
    image: absolute path of the image it saw ('' when absent).
    c2w: camera-to-world, 4 rows of 4 floats, OpenGL camera axes, Blender world.
    fl_x, fl_y, cx, cy: intrinsics in pixels (continuous pixel coordinates); w, h: image size.
    """

    name: str
    image: str
    c2w: tuple[tuple[float, ...], ...]
    fl_x: float
    fl_y: float
    cx: float
    cy: float
    w: int
    h: int


@dataclass(frozen=True)
class BlenderCamera:
    """Blender camera data settings for one ``ViewCamera``."""

    lens: float
    sensor_width: float
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int


@dataclass(frozen=True)
class RunData:
    """Everything ``scene_io`` imports from one run directory."""

    run_dir: str
    mesh: str
    """Absolute path of the GLB."""
    views: tuple[ViewCamera, ...]
    input_camera: ViewCamera | None
    photo: str
    """The original photo copied into the run ('' when absent)."""


def blender_camera(cam: ViewCamera) -> BlenderCamera:
    """The Blender camera settings that reproduce ``cam``'s projection (docs/architecture.md formula)."""
    return BlenderCamera(
        lens=cam.fl_x * SENSOR_WIDTH / cam.w,
        sensor_width=SENSOR_WIDTH,
        shift_x=(cam.w / 2 - cam.cx) / cam.w,
        shift_y=(cam.cy - cam.h / 2) / cam.w * cam.fl_x / cam.fl_y,
        resolution_x=int(cam.w),
        resolution_y=int(cam.h),
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFormatError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFormatError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a JSON object")
    return data


def _camera(run_dir: Path, meta: dict, frame: dict, name: str) -> ViewCamera:
    """One frame → ViewCamera; per-frame intrinsics override the top level."""
    def get(key, default=None):
        value = frame.get(key, meta.get(key, default))
        if value is None:
            raise KeyError(key)
        return value

    c2w = frame["transform_matrix"]
    rows = tuple(tuple(float(v) for v in row) for row in c2w)
    if len(rows) != 4 or any(len(r) != 4 for r in rows):
        raise ValueError("transform_matrix must be 4x4")
    fl_x = float(get("fl_x"))
    fl_y = float(get("fl_y", fl_x))
    w, h = int(get("w")), int(get("h"))
    cx, cy = float(get("cx", w / 2)), float(get("cy", h / 2))
    values = (fl_x, fl_y, cx, cy, *(v for r in rows for v in r))
    if not all(math.isfinite(v) for v in values) or min(fl_x, fl_y, w, h) <= 0:
        raise ValueError("intrinsics and transform_matrix must be finite, sizes and focals positive")
    rel = frame.get("file_path", "")
    image = str((run_dir / rel).resolve()) if rel else ""
    return ViewCamera(name, image, rows, fl_x, fl_y, cx, cy, w, h)


def load_transforms(run_dir: Path, path: Path) -> tuple[tuple[ViewCamera, ...], ViewCamera | None]:
    """The view cameras and the input camera (``input_frame``, if any) of a transforms.json."""
    meta = _read_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RunFormatError(f"{path}: no frames")
    try:
        views = tuple(_camera(run_dir, meta, f, f"view_{i:03d}") for i, f in enumerate(frames))
        inp = meta.get("input_frame")
        input_camera = _camera(run_dir, meta, inp, "input") if isinstance(inp, dict) else None
    except KeyError as exc:
        raise RunFormatError(f"{path}: a frame lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise RunFormatError(f"{path}: malformed frame ({exc})") from None
    return views, input_camera


def load_run(run_dir: str | Path) -> RunData:
    """Read a finished run directory (``result.json`` names the outputs, relative paths)."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise RunFormatError(f"{run_dir}: not a directory")
    manifest = run_dir / "result.json"
    outputs = _read_json(manifest).get("outputs", {}) if manifest.exists() else {}
    if not isinstance(outputs, dict):
        raise RunFormatError(f"{manifest}: 'outputs' is not an object")
    mesh = run_dir / outputs.get("mesh", "mesh/head.glb")
    if not mesh.is_file():
        raise RunFormatError(f"{mesh}: mesh missing")
    transforms = run_dir / outputs.get("transforms", "transforms.json")
    views, input_camera = load_transforms(run_dir, transforms)
    photo = run_dir / outputs.get("photo", "input/photo.png")
    return RunData(str(run_dir), str(mesh), views, input_camera, str(photo) if photo.is_file() else "")
