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
