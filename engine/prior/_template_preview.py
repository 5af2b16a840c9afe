"""Flat-shaded renders of a head mesh from several sides (a contact sheet for eyes, not metrics).

    python -m engine.prior._template_preview docs/template_head.png
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from recon.cameras import orbit_camera
from recon.raster import face_normals, rasterize

log = logging.getLogger(__name__)

#: (azimuth, elevation) of the sheet's views: front, three-quarter, side, back, below, above.
VIEWS = ((0, 0), (40, 10), (90, 0), (140, 5), (180, 0), (-90, 0), (0, 60), (-30, -25))


def render(vertices: np.ndarray, faces: np.ndarray, azimuth: float, elevation: float, size: int = 320) -> np.ndarray:
    """uint8 [size, size, 3]: Lambert-shaded skin tone on white, light from above the camera."""
    cam = orbit_camera(azimuth, elevation, 0.9, 30.0, size)
    frags = rasterize(vertices, faces, cam)
    light = cam.c2w[:3, 2] * 0.8 + cam.c2w[:3, 1] * 0.4 + cam.c2w[:3, 0] * 0.3
    light /= np.linalg.norm(light)
    shade = np.clip(face_normals(vertices, faces)[np.maximum(frags.face_id, 0)] @ light, 0, 1) * 0.8 + 0.2
    img = np.where(frags.mask[..., None], shade[..., None] * np.array([230.0, 200.0, 180.0]), 255.0)
    return img.astype(np.uint8)


def contact_sheet(vertices: np.ndarray, faces: np.ndarray, size: int = 320) -> np.ndarray:
    """uint8 [2·size, 4·size, 3]: the ``VIEWS`` in two rows."""
    tiles = [render(vertices, faces, az, el, size) for az, el in VIEWS]
    return np.concatenate([np.concatenate(tiles[:4], 1), np.concatenate(tiles[4:], 1)], 0)


def main(argv: list[str]) -> None:
    from PIL import Image

    from .template import load_data

    logging.basicConfig(level=logging.INFO)
    out = Path(argv[0] if argv else "docs/template_head.png")
    data = load_data()
    Image.fromarray(contact_sheet(data.vertices, data.faces)).save(out)
    log.info("wrote %s (%d vertices)", out, len(data.vertices))


if __name__ == "__main__":
    main(sys.argv[1:])
