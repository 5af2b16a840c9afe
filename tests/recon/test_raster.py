"""recon.raster against a brute-force per-pixel ray–triangle reference, and recon.uv."""
from __future__ import annotations

import time

import numpy as np
import pytest
import trimesh

from recon.cameras import Camera, look_at, orbit_camera
from recon.raster import coverage, edge_pixels, front_facing, interpolate, rasterize, vertex_normals, visible_vertices
from recon.uv import dilate, rasterize_uv, unwrap


def _scene():
    """Two overlapping objects so the z-test matters."""
    a = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    b = trimesh.creation.box(extents=(0.12, 0.12, 0.12))
    b.apply_translation((0.06, 0.08, 0.03))
    v = np.concatenate([a.vertices, b.vertices])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    return v, f


def _brute(vertices, faces, camera):
    """Möller–Trumbore on every pixel ray against every face: (face_id, t-depth) [h, w]."""
    o, d = camera.rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    tri = vertices[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d[:, None], e2[None])  # [R, F, 3]
    det = np.einsum("rfk,fk->rf", p, e1)
    det = np.where(np.abs(det) < 1e-15, 1e-15, det)
    s = o[:, None] - tri[None, :, 0]
    u = np.einsum("rfk,rfk->rf", s, p) / det
    q = np.cross(s, e1[None])
    v = np.einsum("rk,rfk->rf", d, q) / det
    t = np.einsum("fk,rfk->rf", e2, q) / det
    hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = np.where(hit, t, np.inf)
    fid = np.where(np.isfinite(t.min(1)), t.argmin(1), -1)
    fwd = -camera.c2w[:3, 2]
    depth = t.min(1) * (d @ fwd)  # ray length → camera depth
    return fid.reshape(camera.h, camera.w), depth.reshape(camera.h, camera.w)


def test_matches_brute_force():
    v, f = _scene()
    c2w = look_at(np.array([0.25, -0.7, 0.2]))
    cam = Camera(c2w, 95.0, 90.0, 27.3, 19.1, 52, 40)  # off-centre, non-square pixels
    frags = rasterize(v, f, cam)
    ref_fid, ref_depth = _brute(v, f, cam)
    both = (frags.face_id >= 0) & (ref_fid >= 0)
    # Coverage may differ only on pixels whose centre lies on an edge: allow a handful.
    assert (frags.mask != (ref_fid >= 0)).sum() <= 3
    assert both.sum() > 500
    np.testing.assert_allclose(frags.depth[both], ref_depth[both], rtol=1e-5, atol=1e-6)
    assert (frags.face_id[both] == ref_fid[both]).mean() > 0.97  # ties on shared edges differ
    assert np.all(np.isinf(frags.depth[~frags.mask]))
    # Perspective-correct barycentrics put the interpolated point on the pixel's ray.
    pts = interpolate(v, frags)[both]
    o, d = cam.rays()
    along = ((pts - o[both]) * d[both]).sum(-1, keepdims=True)
    np.testing.assert_allclose(pts, o[both] + along * d[both], atol=1e-5)
    # Per-face-corner attributes: the corner index picks out the barycentrics.
    corners = np.broadcast_to(np.eye(3, dtype=np.float32), (len(f), 3, 3))
    np.testing.assert_allclose(interpolate(corners, frags)[both], frags.bary[both], atol=1e-6)


def test_visible_vertices_front_only():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    cam = orbit_camera(0, 0, 1.0, 26, 128)
    vis = visible_vertices(sphere.vertices, sphere.faces, cam, eps=2e-3)
    y = sphere.vertices[:, 1]
    assert vis[y < -0.03].all()  # facing the camera (which is on −Y)
    assert not vis[y > 0.0].any()  # the back half


def test_rejects_bad_shapes():
    cam = orbit_camera(0, 0, 1.0, 26, 16)
    with pytest.raises(ValueError, match="faces"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 5]]), cam)
    with pytest.raises(ValueError, match="vertices"):
        rasterize(np.zeros((3, 4)), np.array([[0, 1, 2]]), cam)


def test_speed_512_20k_faces():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.15)  # 20480 faces
    cam = orbit_camera(20, 10, 1.0, 26, 512)
    rasterize(sphere.vertices, sphere.faces, cam)
    t = time.perf_counter()
    frags = rasterize(sphere.vertices, sphere.faces, cam)
    assert time.perf_counter() - t < 0.5
    assert frags.mask.mean() > 0.2


def test_unwrap_and_rasterize_uv():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    vmap, faces_uv, uvs = unwrap(sphere.vertices, sphere.faces, resolution=128, padding=2)
    assert faces_uv.shape == sphere.faces.shape
    np.testing.assert_array_equal(vmap[faces_uv], sphere.faces)  # same faces, split at seams
    assert uvs.min() >= 0 and uvs.max() <= 1
    fid, bary = rasterize_uv(uvs, faces_uv, 128)
    cover = fid >= 0
    assert 0.3 < cover.mean() < 0.95
    # A texel's barycentrics reproduce its UV: the centre of texel (r, c) is ((c+.5)/S, 1−(r+.5)/S).
    r, c = np.nonzero(cover)
    uv_ref = np.stack([(c + 0.5) / 128, 1 - (r + 0.5) / 128], -1)
    uv_got = np.einsum("nk,nkc->nc", bary[r, c], uvs[faces_uv[fid[r, c]]])
    np.testing.assert_allclose(uv_got, uv_ref, atol=1e-5)


def test_dilate_fills_gutter():
    tex = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), bool)
    tex[4:8, 4:8] = (200, 100, 50)
    mask[4:8, 4:8] = True
    out = dilate(tex, mask, pixels=2)
    assert out.dtype == np.uint8
    assert (out[2:10, 2:10] == (200, 100, 50)).all()
    assert (out[0, 0] == 0).all() and (out[12:, 12:] == 0).all()


def test_vertex_normals_point_out():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    n = vertex_normals(sphere.vertices, sphere.faces)
    assert (np.einsum("vk,vk->v", n, sphere.vertices) > 0.98).all()


def test_cull_back_matches_full_raster_on_closed_mesh():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    v = sphere.vertices * np.array([1.0, 1.3, 0.8])
    cam = orbit_camera(35, 20, 0.6, 30, 96)
    full = rasterize(v, sphere.faces, cam)
    culled = rasterize(v, sphere.faces, cam, cull_back=True)
    np.testing.assert_array_equal(culled.mask, full.mask)
    both = full.mask
    assert (culled.face_id[both] == full.face_id[both]).mean() > 0.99  # ties on shared edges may differ
    np.testing.assert_allclose(culled.depth[both], full.depth[both], rtol=1e-5)
    assert front_facing(v, sphere.faces, cam).mean() < 0.6


def test_coverage_matches_supersampled_raster():
    """Edge-pixel coverage with n × n samples equals the mean of an n×-resolution raster's mask."""
    v, f = _scene()
    n = 4
    cam = orbit_camera(25, 15, 0.7, 30, 40)
    big = rasterize(v, f, cam.resized(40 * n, 40 * n))
    ref = big.mask.reshape(40, n, 40, n).mean(axis=(1, 3))
    small = rasterize(v, f, cam)
    edge = edge_pixels(small.mask)
    rows, cols = np.nonzero(edge)
    xy, _ = cam.project(v)
    got = coverage(xy, f, np.stack([rows, cols], 1), 40, 40, n=n)
    assert len(rows) > 50 and 0 < got.mean() < 1
    # samples exactly on an edge may go either way: a few differ by one sample
    diff = np.abs(got - ref[rows, cols])
    assert np.median(diff) == 0 and diff.max() <= 2 / n**2 + 1e-6
    # pixels away from the edge are fully in or out
    assert set(np.unique(ref[~edge])) <= {0.0, 1.0}
