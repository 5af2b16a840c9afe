"""Writing input/: every file goes to a temporary name and is renamed only when all are written.

A failure part-way leaves no file under its final name, so nothing in input/ looks complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _save_png(array: np.ndarray, mode: str, path: Path, compress_level: int) -> None:
    Image.fromarray(np.ascontiguousarray(array), mode).save(path, format="PNG", compress_level=compress_level)


def write_input_dir(out_dir: Path, photo: np.ndarray, crop: np.ndarray, landmarks: dict, camera: dict,
                    compress_level: int = 1) -> dict[str, Path]:
    """Write input/{photo.png, crop.png, landmarks.json, camera.json}; return their paths.

    photo: [H, W, 3] uint8; crop: [S, S, 4] uint8.
    """
    folder = Path(out_dir) / "input"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {
        "photo.png": lambda p: _save_png(photo, "RGB", p, compress_level),
        "crop.png": lambda p: _save_png(crop, "RGBA", p, compress_level),
        "landmarks.json": lambda p: p.write_text(json.dumps(landmarks)),
        "camera.json": lambda p: p.write_text(json.dumps(camera, indent=1)),
    }
    temps = {name: folder / f".{name}.{os.getpid()}.tmp" for name in jobs}
    try:
        for name, write in jobs.items():
            write(temps[name])
        for name, temp in temps.items():
            os.replace(temp, folder / name)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return {name.split(".")[0]: folder / name for name in jobs}
