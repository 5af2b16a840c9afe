"""recon.texture: baking a known texture back from rendered views."""
from __future__ import annotations

import numpy as np
import trimesh

from recon.cameras import orbit_camera
from recon.texture import bake_from_views, border_weight, render_textured, sample_bilinear, texel_geometry
from recon.uv import dilate, unwrap

S = 128


def _pattern(points):
    """A smooth colour field over space: the texture is defined by the surface point, so seams agree."""
    k = 25.0
    return 0.5 + 0.4 * np.stack([np.sin(k * points[:, 0]), np.cos(k * points[:, 1]), np.sin(k * points[:, 2] + 1)], -1)


def _textured_cube():
    box = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    box = box.subdivide().subdivide()  # more faces: smoother vertex normals on the flats
    vmap, faces_uv, uvs = unwrap(box.vertices, box.faces, resolution=S, padding=3)
    v, f = box.vertices, box.faces
    geo = texel_geometry(v, f, uvs, faces_uv, S)
    tex = np.zeros((S, S, 3), np.float32)
    tex[geo.rows, geo.cols] = _pattern(geo.points)
    tex = dilate(tex, geo.mask, 3)
    return v, f, uvs, faces_uv, tex, geo


def test_bake_recovers_texture():
    v, f, uvs, faces_uv, tex, geo = _textured_cube()
    views = []
    for az, el in [(0, 10), (90, 10), (180, 10), (-90, 10), (45, 60), (-135, -60), (30, 85), (0, -85)]:
        cam = orbit_camera(az, el, 1.0, 26, 160)
        colour, covered = render_textured(v, f, uvs, faces_uv, tex, cam)
        rgba = np.concatenate([colour, covered[..., None].astype(np.float32)], -1)
        views.append((rgba, cam, None))
    baked, weight = bake_from_views(v, f, uvs, faces_uv, views, S, border_px=2.0)
    seen = weight[geo.rows, geo.cols] > 0
    assert seen.mean() > 0.97
    err = np.abs(baked[geo.rows, geo.cols] - tex[geo.rows, geo.cols])[seen]
    assert np.median(err) < 0.02 and np.percentile(err, 95) < 0.08
    assert np.all(weight[~geo.mask] == 0)


def test_hidden_side_gets_no_weight():
    v, f, uvs, faces_uv, tex, geo = _textured_cube()
    cam = orbit_camera(0, 0, 1.0, 26, 160)  # sees only the −Y face
    colour, covered = render_textured(v, f, uvs, faces_uv, tex, cam)
    _, weight = bake_from_views(v, f, uvs, faces_uv, [(colour, cam, covered)], S)
    w = weight[geo.rows, geo.cols]
    y = geo.points[:, 1]
    assert (w[y < -0.099] > 0).mean() > 0.9
    assert np.all(w[y > -0.09] == 0)


def test_sample_and_border_helpers():
    img = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    # Pixel centres sample exactly; halfway between two centres averages.
    np.testing.assert_allclose(sample_bilinear(img, np.array([[1.5, 0.5], [2.0, 1.5]]))[:, 0], [1.0, 5.5])
    m = np.zeros((9, 9), bool)
    m[1:8, 1:8] = True
    bw = border_weight(m, 3.0)
    assert bw[0, 0] == 0 and bw[4, 4] == 1 and 0 < bw[1, 4] < 1
