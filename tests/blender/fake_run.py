"""A small run directory in the engine's format, for scene-import tests that need no engine.

The head is an off-centre ellipsoid (asymmetric on purpose, so a wrong axis mapping
shows); each view's alpha is the exact silhouette from ray–ellipsoid intersection.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CENTER = np.array([0.02, -0.01, 0.03])
RADII = np.array([0.08, 0.10, 0.13])


def _ellipsoid():
    import trimesh

    sphere = trimesh.creation.uv_sphere(radius=1.0, count=[24, 24])
    v = sphere.vertices
    uv = np.stack([np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi) + 0.5, np.arccos(np.clip(v[:, 2], -1, 1)) / np.pi], 1)
    return v * RADII + CENTER, sphere.faces, uv


def _silhouette(cam) -> np.ndarray:
    """alpha [h, w] uint8: 255 where the pixel-centre ray hits the ellipsoid."""
    o, d = cam.rays()
    o = (o - CENTER) / RADII
    d = d / RADII
    a = (d * d).sum(-1)
    b = 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    return np.where(b * b - 4 * a * c >= 0, 255, 0).astype(np.uint8)


def write_glb(path: Path) -> None:
    """The ellipsoid as a GLB (Y-up as glTF requires) with a base-colour texture, metallic 0."""
    import trimesh
    from PIL import Image

    verts, faces, uv = _ellipsoid()
    gltf = verts[:, [0, 2, 1]] * np.array([1, 1, -1])  # Blender (x, y, z) → glTF (x, z, −y)
    tex = np.zeros((32, 32, 3), np.uint8)
    tex[..., 0] = np.linspace(0, 255, 32)[None, :]
    tex[..., 1] = 180
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(tex), metallicFactor=0.0,
                                                   roughnessFactor=0.6)
    mesh = trimesh.Trimesh(gltf, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)


def make_run(run_dir: Path, n_views: int = 4, size: int = 64) -> Path:
    """Write mesh/head.glb, views/*.png, transforms.json, input/*.png, result.json."""
    from PIL import Image

    from recon.cameras import Camera, look_at, orbit_camera, to_transforms

    run_dir = Path(run_dir)
    write_glb(run_dir / "mesh" / "head.glb")
    cams = [orbit_camera(360 * i / n_views - 180, 10.0 * (i % 3 - 1), 0.8, 30.0, size) for i in range(n_views)]
    (run_dir / "views").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, cam in enumerate(cams):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., :3] = 128
        rgba[..., 3] = _silhouette(cam)
        paths.append(f"views/view_{i:03d}.png")
        Image.fromarray(rgba, "RGBA").save(run_dir / paths[-1])
    meta = to_transforms(cams, paths)
    # The input camera: off-centre principal point and fx != fy to exercise the shift formula.
    inp = Camera(look_at(np.array([0.1, -0.9, 0.05])), 300.0, 290.0, 70.0, 55.0, 128, 112)
    (run_dir / "input").mkdir(exist_ok=True)
    Image.fromarray(np.full((112, 128, 3), 200, np.uint8)).save(run_dir / "input" / "crop.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(run_dir / "input" / "photo.png")
    meta["input_frame"] = {"file_path": "input/crop.png", "transform_matrix": inp.c2w.tolist(), "fl_x": inp.fx,
                           "fl_y": inp.fy, "cx": inp.cx, "cy": inp.cy, "w": inp.w, "h": inp.h}
    (run_dir / "transforms.json").write_text(json.dumps(meta))
    outputs = {"mesh": "mesh/head.glb", "transforms": "transforms.json", "photo": "input/photo.png",
               "crop": "input/crop.png"}
    (run_dir / "result.json").write_text(json.dumps({"outputs": outputs}))
    return run_dir


if __name__ == "__main__":
    import sys

    make_run(Path(sys.argv[1]))
