"""recon.sampling: the scene box, the cameras' meeting point, the visual hull and its SDF, the
occupancy grid's seeding and the rays, on a ball seen by a few small cameras (expected values
from the ball's geometry, not from the code under test)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import Camera, look_at
from recon.dataset import ViewSet
from recon.sampling import (SceneBox, _axes_meeting_point, all_rays, fit_scene_box, full_estimator, hull_sdf_grid,
                            make_estimator, mesh_sdf_grid, visual_hull)

CENTRE = np.array([0.05, -0.02, 0.03])
R = 0.1


def _camera(eye, size=24, fov=40.0, target=CENTRE):
    f = 0.5 * size / np.tan(np.radians(fov) / 2)
    return Camera(look_at(np.asarray(eye, float), target), f, f, size / 2, size / 2, size, size)


def _ball_views(n=8, size=24):
    """n cameras around the ball, 0.5 m away, elevations from below to above; masks = the ball's exact silhouette."""
    cams, masks = [], []
    for k in range(n):
        az, el = 2 * np.pi * k / n, np.radians((-70, -10, 30, 75)[k % 4])
        eye = CENTRE + 0.5 * np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])
        cam = _camera(eye, size)
        o, d = cam.rays()
        t = ((CENTRE - o) * d).sum(-1)
        dist = np.linalg.norm(o + t[..., None] * d - CENTRE, axis=-1)
        cams.append(cam)
        masks.append((dist < R).astype(np.float32))
    images = np.stack([np.dstack([m, 0.5 * m, 0.25 + 0 * m]) for m in masks]).astype(np.float32)
    return ViewSet(images, np.stack(masks), tuple(cams), tuple(Path(f"v{k}.png") for k in range(n)))


@pytest.fixture(scope="module")
def views():
    return _ball_views()


def test_scene_box_maps_both_ways():
    box = SceneBox(np.array([1.0, 2.0, 3.0]), 0.5)
    assert np.allclose(box.to_unit([[1.5, 2.0, 2.0]]), [[1.0, 0.0, -2.0]])
    assert np.allclose(box.to_world([[1.0, 0.0, -2.0]]), [[1.5, 2.0, 2.0]])
    x = np.random.default_rng(0).normal(size=(5, 3))
    assert np.allclose(box.to_world(box.to_unit(x)), x)


def test_axes_meet_at_the_target():
    cams = (_camera([0.4, 0, 0.1]), _camera([0, 0.5, -0.2]), _camera([-0.3, -0.3, 0.3]))
    assert np.allclose(_axes_meeting_point(cams), CENTRE, atol=1e-9)


def test_visual_hull_keeps_the_ball_and_carves_what_a_view_sees_empty(views):
    lo, hi = CENTRE - 2 * R, CENTRE + 2 * R
    res = 20
    hull = visual_hull(views, lo, hi, res, dilate_px=0)
    cell = (hi - lo) / res
    axes = [lo[k] + (np.arange(res) + 0.5) * cell[k] for k in range(3)]
    dist = np.linalg.norm(np.stack(np.meshgrid(*axes, indexing="ij"), -1) - CENTRE, axis=-1)
    assert hull[dist < 0.8 * R].all()  # the ball's cells (away from pixel edges) are kept
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    seen_by_all = np.ones(len(pts), bool)
    for cam in views.cameras:
        uv, depth = cam.project(pts)
        seen_by_all &= (depth > 0) & (uv >= 0).all(1) & (uv[:, 0] < cam.w) & (uv[:, 1] < cam.h)
    far = (dist.reshape(-1) > 1.6 * R) & seen_by_all
    assert far.sum() > 100 and not hull.reshape(-1)[far].any()  # outside a silhouette every camera sees
    assert hull.sum() > (dist < R).sum()  # a hull of a few views is bigger than the ball
    dilated = visual_hull(views, lo, hi, res, dilate_px=2)
    assert (dilated >= hull).all() and dilated.sum() > hull.sum()
    # a cell no camera sees (outside every image) is never carved
    far = visual_hull(views, CENTRE + 5, CENTRE + 6, 2, dilate_px=0)
    assert far.all()
    one = ViewSet(views.images[:1], views.masks[:1], views.cameras[:1], views.paths[:1])
    behind = 2 * CENTRE - views.cameras[0].center  # behind the camera: depth < 0
    assert visual_hull(one, behind - 1e-3, behind + 1e-3, 1, dilate_px=0).all()


def test_fit_scene_box_around_the_hull_and_the_prior(views, caplog):
    box = fit_scene_box(views)
    assert np.allclose(box.centre, CENTRE, atol=0.01)
    assert R * 1.15 <= box.scale < R * 1.15 * 2  # the hull of eight 24-pixel views is loose
    prior = np.array([CENTRE + [0.3, 0, 0], CENTRE - [0, 0, 0.1]])
    wide = fit_scene_box(views, prior_vertices=prior, margin=1.0)
    assert wide.centre[0] == pytest.approx((CENTRE[0] + 0.3 + box.centre[0] - box.scale / 1.15) / 2, abs=0.005)
    assert wide.scale == pytest.approx((CENTRE[0] + 0.3 - (box.centre[0] - box.scale / 1.15)) / 2, abs=0.005)
    empty = ViewSet(views.images, np.zeros_like(views.masks), views.cameras, views.paths)
    with caplog.at_level(logging.WARNING, logger="recon.sampling"):
        fallback = fit_scene_box(empty, margin=1.0)
    assert "the visual hull is empty" in caplog.text
    assert np.allclose(fallback.centre, CENTRE, atol=1e-6)
    # the common view: the ball each camera sees whole (0.5 m away, 20° half-angle), capped at 95 % of the distance
    assert fallback.scale == pytest.approx(0.5 * np.tan(np.radians(20)), rel=1e-3)


def test_hull_sdf_grid_is_negative_inside_and_crosses_near_the_hull(views):
    box = SceneBox(CENTRE, 2 * R)
    grid = hull_sdf_grid(views, box, res=25)
    h = 2 / 24
    assert grid.dtype == np.float32 and grid.shape == (25, 25, 25)
    assert grid[12, 12, 12] < -0.3 and grid[0, 0, 0] > 0.2
    a = np.linspace(-1, 1, 25)
    r = np.linalg.norm(np.stack(np.meshgrid(a, a, a, indexing="ij"), -1), axis=-1)  # ball radius 0.5 in units
    assert (grid[r < 0.35] < 0).all()
    inside = grid < 0
    assert abs(float(grid[12, 12, 12]) + 0.5) < 3 * h  # depth of the centre ≈ the radius (hull a bit bigger)
    assert 0.45 < inside.mean() ** (1 / 3) * 2 / (4 / 3 * np.pi) ** (1 / 3) < 0.65  # volume-equivalent radius


def test_make_estimator_marks_outside_the_hull_and_seeds_the_band(views):
    box = SceneBox(CENTRE, 2 * R)
    res = 16
    est = make_estimator(views, box, lambda x: x.norm(dim=-1) - 0.5, res, (0.1, 0.2), "cpu")
    centres = (est.grid_coords.float() + 0.5) / res * 2 - 1
    r = centres.norm(dim=-1)
    occs = est.occs
    assert (occs == -1).float().mean() > 0.3 and (r[occs == -1] > 0.7).all()  # outside the hull: never sampled
    band = (r > 0.4) & (r < 0.7)
    assert (occs[band] == 1).all()
    assert (occs[r < 0.35] == 0).all()  # inside the hull, deeper than the band: empty
    assert torch.equal(est.binaries.view(-1), occs > 0)


def test_full_estimator_is_all_occupied():
    est = full_estimator(4, "cpu")
    assert bool((est.occs == 1).all()) and bool(est.binaries.all()) and est.binaries.numel() == 64


def test_all_rays_keep_the_pixels_that_hit_the_box(views):
    box = SceneBox(CENTRE, 0.05)
    o, d, rgb, mask = all_rays(views, box)
    n = 0
    for cam, img, m in zip(views.cameras, views.images, views.masks):
        po, pd = cam.rays()
        po, pd = box.to_unit(po.reshape(-1, 3)), pd.reshape(-1, 3)
        with np.errstate(divide="ignore"):
            t1, t2 = (-1 - po) / pd, (1 - po) / pd
        hit = np.minimum(t1, t2).max(-1) < np.maximum(t1, t2).min(-1)
        sel = slice(n, n + hit.sum())
        assert np.allclose(o[sel].numpy(), po[hit], atol=1e-5) and np.allclose(d[sel].numpy(), pd[hit], atol=1e-6)
        assert np.array_equal(rgb[sel].numpy(), img.reshape(-1, 3)[hit]) and np.array_equal(mask[sel].numpy(), m.reshape(-1)[hit])
        n += hit.sum()
    assert len(o) == n and 0 < n < len(views) * 24 * 24
    assert o.dtype == torch.float32 and torch.allclose(d.norm(dim=-1), torch.ones(n))


def test_mesh_sdf_grid_of_an_open_sphere():
    """Signed by the nearest sample's normal, so a sphere with a hole still reads inside / outside."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    keep = s.triangles_center[:, 2] < 0.25  # cut a cap: open
    box = SceneBox(np.zeros(3), 0.5)
    grid = mesh_sdf_grid(np.asarray(s.vertices), np.asarray(s.faces)[keep], box, res=21, n_samples=5_000)
    a = np.linspace(-1, 1, 21)
    pts = np.stack(np.meshgrid(a, a, a, indexing="ij"), -1)
    exact = np.linalg.norm(pts, axis=-1) - 0.6
    away = pts[..., 2] < 0.3  # below the cut
    assert grid.dtype == np.float32 and grid.shape == (21, 21, 21)
    assert np.abs(grid - exact)[away].max() < 0.1  # within a voxel everywhere
    assert (grid[exact < -0.15] < 0).all() and (grid[(exact > 0.05) & away] > 0).all()
    near = (np.abs(exact) < 0.2) & away
    assert np.abs(grid[near] - exact[near]).max() < 0.04  # distances to the samples in the band (faceted sphere)


# -- added for the mutation run (scripts/mutation.sh sampling): each pins a documented contract ------

def test_fit_scene_box_is_the_bounding_box_of_the_hull_cells(views, caplog):
    """The box: the 64³ hull cells' bounds over the ball every camera sees whole, around the axes'
    meeting point, ∪ the prior's per-axis bounds, half of its longest side × margin."""
    radius = 0.5 * np.tan(np.radians(20))  # every camera 0.5 m from CENTRE, 20° half-angle
    lo, hi = CENTRE - radius, CENTRE + radius
    hull = visual_hull(views, lo, hi, 64, dilate_px=2)
    idx = np.argwhere(hull)
    cell = (hi - lo) / 64
    b_lo, b_hi = lo + idx.min(0) * cell, lo + (idx.max(0) + 1) * cell
    with caplog.at_level(logging.INFO, logger="recon.sampling"):
        box = fit_scene_box(views, margin=1.3)
    np.testing.assert_allclose(box.centre, (b_lo + b_hi) / 2, atol=1e-6)
    assert box.scale == pytest.approx((b_hi - b_lo).max() / 2 * 1.3, rel=1e-6)
    assert caplog.records[-1].getMessage() == f"scene box: centre {np.round(box.centre, 4)}, half-size {box.scale:.4f}"
    # a prior reaching far along -x only: only x grows (per-axis bounds, not the global minimum)
    prior = np.array([[CENTRE[0] - 0.5, CENTRE[1], CENTRE[2]], [CENTRE[0], CENTRE[1] + 0.01, CENTRE[2] + 0.01]])
    wide = fit_scene_box(views, prior_vertices=prior, margin=1.0)
    lo2 = np.minimum(b_lo, prior.min(0))
    np.testing.assert_allclose(wide.centre, (lo2 + b_hi) / 2, atol=1e-6)
    assert wide.scale == pytest.approx((b_hi[0] - lo2[0]) / 2, rel=1e-6)


def test_fit_scene_box_common_view_of_oblong_and_wide_cameras(caplog):
    """Empty hull → the largest ball around the meeting point that every camera sees entirely:
    distance × the narrower half-angle's tangent, capped at 95 % of the nearest camera's distance."""
    def cams(w, h, fx, fy):
        out = []
        for k in range(4):
            az = 2 * np.pi * k / 4
            eye = CENTRE + 0.5 * np.array([np.sin(az), -np.cos(az), 0.3 * (k % 2)]) / np.linalg.norm([1, 0.3 * (k % 2)])
            out.append(Camera(look_at(eye, CENTRE), fx, fy, w / 2, h / 2, w, h))
        return tuple(out)

    def empty(cameras):
        w, h = cameras[0].w, cameras[0].h
        return ViewSet(np.zeros((4, h, w, 3), np.float32), np.zeros((4, h, w), np.float32), cameras,
                       tuple(Path(f"v{k}.png") for k in range(4)))

    with caplog.at_level(logging.WARNING, logger="recon.sampling"):
        narrow = fit_scene_box(empty(cams(32, 20, 30.0, 36.0)), margin=1.0)  # h/2/fy = 0.278 < w/2/fx = 0.533
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the visual hull is empty; using the cameras' common view"]
    np.testing.assert_allclose(narrow.centre, CENTRE, atol=1e-9)
    assert narrow.scale == pytest.approx(0.5 * 10 / 36.0, rel=1e-9)
    tall = fit_scene_box(empty(cams(20, 32, 36.0, 30.0)), margin=1.0)  # w/2/fx = 0.278 < h/2/fy
    assert tall.scale == pytest.approx(0.5 * 10 / 36.0, rel=1e-9)
    wide = fit_scene_box(empty(cams(24, 24, 4.0, 4.0)), margin=1.0)  # 143° field of view: the cap
    assert wide.scale == pytest.approx(0.95 * 0.5, rel=1e-9)


def test_visual_hull_cell_by_cell_against_projection():
    """Cell [ix, iy, iz] (centre lo + (i + ½)·cell) is kept iff it projects into the (4-neighbour
    dilated) mask, the mask being > 0.5, or outside the image or behind the camera; checked cell by
    cell on an oblong box (axes not interchangeable) and a mask with 0.5-valued and edge pixels."""
    cam = _camera(CENTRE + [0.02, -0.5, 0.05], size=16)
    mask = np.zeros((16, 16), np.float32)
    mask[4:11, 3:9] = 1.0
    mask[12, 2:14] = 0.5  # exactly one half: not in the mask
    mask[0, 5] = mask[7, 0] = 1.0  # on the first row / column
    views = ViewSet(np.zeros((1, 16, 16, 3), np.float32), mask[None], (cam,), (Path("v.png"),))
    lo, hi = CENTRE - [0.25, 0.1, 0.18], CENTRE + [0.15, 0.2, 0.3]
    res = (9, 7, 8)
    for dilate in (0, 1):
        inside = mask > 0.5
        m = inside.copy()
        if dilate:
            m[1:] |= inside[:-1]
            m[:-1] |= inside[1:]
            m[:, 1:] |= inside[:, :-1]
            m[:, :-1] |= inside[:, 1:]
        for n in res:
            hull = visual_hull(views, lo, hi, n, dilate_px=dilate)
            assert hull.shape == (n, n, n)
            for ix, iy, iz in np.ndindex(n, n, n):
                p = lo + (np.array([ix, iy, iz]) + 0.5) * (hi - lo) / n
                uv, depth = cam.project(p[None])
                u, v = int(np.floor(uv[0, 0])), int(np.floor(uv[0, 1]))
                seen = depth[0] > 0 and 0 <= u < 16 and 0 <= v < 16
                assert hull[ix, iy, iz] == (not seen or bool(m[v, u])), (dilate, n, ix, iy, iz)
        assert 0 < hull.sum() < hull.size  # both kinds of cell occur


def test_make_estimator_band_edges_log_and_box():
    """Occupied where −band[0] < sdf < band[1] strictly; the estimator spans [-1, 1]³, one level."""
    views = _ball_views(4)
    box = SceneBox(CENTRE, 2 * R)
    est = make_estimator(views, box, lambda x: torch.where(x[:, 0] > 0, 0.25, -0.125), 8, (0.125, 0.25), "cpu")
    assert torch.equal(est.aabbs, torch.tensor([[-1.0, -1, -1, 1, 1, 1]])) and est.levels == 1
    assert bool((est.occs[est.occs >= 0] == 0).all()) and bool((est.occs == 0).any())  # the edges are outside
    inner = make_estimator(views, box, lambda x: torch.where(x[:, 0] > 0, 0.2499, -0.1249), 8, (0.125, 0.25), "cpu")
    assert torch.equal(inner.occs >= 0, est.occs >= 0) and bool((inner.occs[inner.occs >= 0] == 1).all())
    full = full_estimator(3, "cpu")
    assert torch.equal(full.aabbs, torch.tensor([[-1.0, -1, -1, 1, 1, 1]])) and full.levels == 1


def test_make_estimator_logs_its_counts(views, caplog):
    box = SceneBox(CENTRE, 2 * R)
    with caplog.at_level(logging.INFO, logger="recon.sampling"):
        est = make_estimator(views, box, lambda x: x.norm(dim=-1) - 0.5, 8, (0.1, 0.2), "cpu")
    n_hull, n_occ = int((est.occs >= 0).sum()), int((est.occs > 0).sum())
    assert 0 < n_occ < n_hull < 512
    assert caplog.records[-1].getMessage() == f"occupancy grid 8³: {n_hull} cells in the visual hull, {n_occ} occupied"


def test_hull_sdf_grid_steps_one_cell_per_corner(views):
    """Corners are 2 / (res − 1) apart; the distance changes by at most one corner spacing between
    neighbours (1-Lipschitz), by exactly one across the surface (−½ inside, +½ outside) and
    somewhere along each axis."""
    box = SceneBox(CENTRE, 2 * R)
    grid = hull_sdf_grid(views, box, res=25).astype(np.float64)
    h = 2 / 24
    for axis in range(3):
        d = np.abs(np.diff(grid, axis=axis))
        assert d.max() == pytest.approx(h, rel=1e-5)
        a, b = np.moveaxis(grid, axis, 0)[:-1], np.moveaxis(grid, axis, 0)[1:]
        crossing = (a < 0) != (b < 0)
        assert crossing.any()
        np.testing.assert_allclose(np.minimum(np.abs(a), np.abs(b))[crossing], h / 2, rtol=1e-5)


def test_mesh_sdf_grid_weights_samples_by_area_and_is_seeded():
    """A coarse big sphere beside a tiny, finely meshed one: the samples follow area, so the big
    sphere's band is accurate; the same seed gives the same grid."""
    import trimesh

    big = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    tiny = trimesh.creation.icosphere(subdivisions=4, radius=0.01)
    tiny.apply_translation([0.42, 0.0, 0.0])
    mesh = trimesh.util.concatenate([big, tiny])
    box = SceneBox(np.zeros(3), 0.5)
    grid = mesh_sdf_grid(np.asarray(mesh.vertices), np.asarray(mesh.faces), box, res=17, n_samples=4_000, seed=3)
    a = np.linspace(-1, 1, 17)
    pts = np.stack(np.meshgrid(a, a, a, indexing="ij"), -1)
    exact = np.linalg.norm(pts, axis=-1) - 0.6  # the big sphere, in units (faceting: < 0.01)
    near = (np.abs(exact) < 0.15) & (pts[..., 0] < 0.6)
    assert np.abs(grid[near] - exact[near]).max() < 0.04
    again = mesh_sdf_grid(np.asarray(mesh.vertices), np.asarray(mesh.faces), box, res=17, n_samples=4_000, seed=3)
    assert np.array_equal(grid, again)


def test_mesh_sdf_grid_of_a_mesh_leaving_the_box():
    """Surface beyond the box (a prior larger than the hull) still gives finite distances."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    box = SceneBox(np.zeros(3), 0.5)  # the sphere (1.2 units) pokes out of [-1, 1]³
    grid = mesh_sdf_grid(np.asarray(s.vertices), np.asarray(s.faces), box, res=11, n_samples=2_000)
    assert np.isfinite(grid).all() and grid[5, 5, 5] == pytest.approx(-1.2, abs=0.1)


def test_hull_sdf_grid_sign_is_the_hull_at_each_corner():
    """Corner (i, j, k) of the grid (unit coordinates −1 + i·h) is inside iff it projects into every
    view's mask dilated by one pixel (4-neighbours) or off that image, after the documented opening."""
    from scipy import ndimage

    views = _ball_views(4, size=16)
    box = SceneBox(CENTRE + [0.01, 0.0, -0.01], 1.6 * R)
    res = 13
    grid = hull_sdf_grid(views, box, res=res)
    a = np.linspace(-1, 1, res)
    corners = box.to_world(np.stack(np.meshgrid(a, a, a, indexing="ij"), -1).reshape(-1, 3))
    inside = np.ones(len(corners), bool)
    for cam, mask in zip(views.cameras, views.masks):
        m0 = mask > 0.5
        m = m0.copy()
        m[1:] |= m0[:-1]
        m[:-1] |= m0[1:]
        m[:, 1:] |= m0[:, :-1]
        m[:, :-1] |= m0[:, 1:]
        uv, depth = cam.project(corners)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        seen = (depth > 0) & (u >= 0) & (v >= 0) & (u < cam.w) & (v < cam.h)
        inside[seen] &= m[v[seen], u[seen]]
    expected = ndimage.binary_opening(inside.reshape(res, res, res))
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(grid < 0, expected)
