"""Shaded RGBA renders of a textured mesh (the projection backend's views).

Lambert with a soft ambient and a headlight slightly above the camera: the shading only
hints at shape, so the albedo (the photo's colours) stays readable for the recon stage.

Speed: the colour is rendered once per pixel at the view's resolution (the texture holds
no detail finer than the photo, which has about the views' resolution), and only the
silhouette is anti-aliased: the alpha of pixels on the coverage edge is the share of
``ss`` × ``ss`` sample points inside the mesh (``recon.raster.coverage``). Closed meshes
are rasterised with back faces culled. Both together are ~10× faster than rendering
everything at 2× and averaging, with a finer alpha ramp.
"""
from __future__ import annotations

import numpy as np

from recon.cameras import Camera
from recon.raster import coverage, edge_pixels, front_facing, interpolate, rasterize
from recon.texture import render_textured


def render_rgba(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    normals: np.ndarray,
    texture: np.ndarray,
    camera: Camera,
    *,
    ambient: float = 0.6,
    ss: int = 4,
    closed: bool = False,
) -> np.ndarray:
    """One view, straight-alpha RGBA uint8 [h, w, 4].

    vertices: [V, 3]; faces: [F, 3] (also the UV faces); uvs: [V, 2]; normals: [V, 3] unit;
    texture: float [S, S, 3] in [0, 1] or uint8; camera: the output camera (h × w).
    ss: samples per pixel side for the silhouette's coverage (1: hard edges).
    closed: the mesh is closed and wound counter-clockwise from outside (back faces are culled).
    """
    frags = rasterize(vertices, faces, camera, cull_back=closed)
    colour, covered = render_textured(vertices, faces, uvs, faces, texture, camera, frags)
    n = interpolate(normals, frags)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    # Headlight from the camera, raised a little so the chin and brows read as shape.
    light = camera.c2w[:3, :3] @ np.array([0.0, 0.35, 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(n @ light, 0.0, 1.0)
    rgb = colour[..., :3] * (ambient + (1.0 - ambient) * lambert)[..., None] * covered[..., None]
    alpha = covered.astype(np.float32)
    if ss > 1:
        alpha, rgb = _antialias(vertices, faces, camera, covered, rgb, ss, closed)
    out = np.concatenate([rgb, alpha[..., None]], -1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _antialias(vertices, faces, camera: Camera, covered, rgb, ss: int, closed: bool):
    """(alpha [h, w], rgb [h, w, 3]): sub-pixel coverage on the silhouette's pixels.

    Pixels partly covered but with an empty centre take the mean colour of their covered
    8-neighbours (straight alpha: the colour is the surface's, the alpha its share).
    """
    h, w = covered.shape
    edge = edge_pixels(covered)
    rows, cols = np.nonzero(edge)
    xy, _ = camera.project(np.asarray(vertices, np.float64))
    f = np.asarray(faces, np.int64)
    if closed:  # the union of the front faces is the silhouette of a closed mesh
        f = f[front_facing(vertices, f, camera)]
    alpha = covered.astype(np.float32)
    alpha[rows, cols] = coverage(xy, f, np.stack([rows, cols], 1), h, w, n=ss)
    fill = edge & ~covered & (alpha > 0)
    if fill.any():
        pad_rgb = np.pad(rgb * covered[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_cov = np.pad(covered.astype(np.float32), 1)
        r, c = np.nonzero(fill)
        acc = np.zeros((len(r), 3), np.float32)
        cnt = np.zeros(len(r), np.float32)
        for dy in range(3):
            for dx in range(3):
                acc += pad_rgb[r + dy, c + dx]
                cnt += pad_cov[r + dy, c + dx]
        rgb = rgb.copy()
        rgb[r, c] = acc / np.maximum(cnt, 1)[:, None]
        alpha[r, c] = np.where(cnt > 0, alpha[r, c], 0)
    return alpha, rgb


def contact_sheet(images: list[np.ndarray], columns: int = 4, tile: int = 256,
                  background: tuple[int, int, int] = (128, 128, 128)) -> np.ndarray:
    """RGBA views [h, w, 4] uint8 → one RGB sheet [rows·tile, columns·tile, 3] on a flat background."""
    from PIL import Image

    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * tile, columns * tile, 3), np.uint8)
    sheet[:] = background
    for i, rgba in enumerate(images):
        im = np.asarray(Image.fromarray(rgba).resize((tile, tile), Image.LANCZOS), np.float32) / 255
        a = im[..., 3:]
        rgb = im[..., :3] * a + np.asarray(background, np.float32) / 255 * (1 - a)
        r, c = divmod(i, columns)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return sheet


def main(argv: list[str]) -> None:
    """``python -m engine.multiview._shade RUN_DIR OUT.png``: the run's views as a 4-column sheet."""
    import json
    from pathlib import Path

    from PIL import Image

    run_dir, out = Path(argv[0]), Path(argv[1])
    meta = json.loads((run_dir / "transforms.json").read_text())
    images = [np.asarray(Image.open(run_dir / fr["file_path"]).convert("RGBA")) for fr in meta["frames"]]
    Image.fromarray(contact_sheet(images)).save(out)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
