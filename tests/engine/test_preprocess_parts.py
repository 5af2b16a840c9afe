"""Pieces of the preprocess stage that need no face: crop geometry, camera, guided filter."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from engine.preprocess.camera import crop_intrinsics, photo_intrinsics
from engine.preprocess.crop import crop_square, inside_mask, square_box, to_crop
from engine.preprocess.matte import guided_filter, smoothstep


def test_crop_square_maps_points_exactly():
    # A single bright pixel lands where to_crop() says, with padding on two sides.
    image = np.zeros((100, 120), np.uint8)
    image[30, 40] = 255  # centre (40.5, 30.5) in continuous coords
    box = (-20, -10, 60, 70)  # 80 px square, leaves the photo at the left and top
    crop = crop_square(image, box, 160, pad="constant")
    (x, y), = to_crop(np.array([[40.5, 30.5]]), box, 160)
    peak = np.unravel_index(np.argmax(crop), crop.shape)
    assert (peak[1] + 0.5, peak[0] + 0.5) == pytest.approx((x, y), abs=1.0)
    assert (x, y) == pytest.approx(((40.5 + 20) * 2, (30.5 + 10) * 2))
    edge = crop_square(np.full((50, 50, 3), 7, np.uint8), (-25, -25, 75, 75), 64, pad="edge")
    assert edge.shape == (64, 64, 3) and (edge == 7).all()
    mask = inside_mask(box, 120, 100, 160)
    assert not mask[:19].any() and not mask[:, :39].any() and mask[21:, 41:].all()
    assert square_box(10.0, 10.0, 7.0) == (7, 7, 14, 14)


def test_camera_exif_and_default():
    k, source = photo_intrinsics(4000, 3000, 26.0, 46.8)
    assert source == "exif"
    # 26 mm-equivalent: diagonal fov = 2·atan(43.27 / 52) ≈ 79.5°, same in pixels.
    assert math.degrees(2 * math.atan(5000 / (2 * k.fx))) == pytest.approx(79.51, abs=0.05)
    k, source = photo_intrinsics(4000, 3000, None, 46.8)
    assert source == "default" and math.degrees(2 * math.atan(2500 / k.fx)) == pytest.approx(46.8)
    c = crop_intrinsics(k, (1000, 500, 2000, 1500), 500)
    assert (c.fx, c.cx, c.cy) == pytest.approx((k.fx / 2, 500.0, 500.0))


def test_guided_filter_matches_explicit_solve_and_sharpens_edges():
    rng = np.random.default_rng(0)
    guide = rng.random((40, 40, 3)).astype(np.float32)
    src = rng.random((40, 40)).astype(np.float32)
    box = lambda x: cv2.boxFilter(x, -1, (5, 5), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mi, mp = box(guide), box(src)
    cov = box(guide * src[..., None]) - mi * mp[..., None]
    var = np.stack([np.stack([box(guide[..., i] * guide[..., j]) - mi[..., i] * mi[..., j] for j in range(3)], -1)
                    for i in range(3)], -2) + 1e-3 * np.eye(3)
    a = np.linalg.solve(var.astype(np.float64), cov[..., None].astype(np.float64))[..., 0].astype(np.float32)
    expected = (box(a) * guide).sum(-1) + box(mp - (a * mi).sum(-1))
    np.testing.assert_allclose(guided_filter(guide, src, 2, 1e-3), expected, atol=1e-5)
    # A blocky low-resolution mask of a disc snaps to the disc's edge in the image.
    yy, xx = np.mgrid[:128, :128]
    disc = (((xx - 60.3) ** 2 + (yy - 70.1) ** 2) < 40 ** 2).astype(np.float32)
    image = np.where(disc[..., None] > 0, [0.8, 0.6, 0.5], [0.2, 0.3, 0.6]).astype(np.float32)
    coarse = cv2.resize(cv2.resize(disc, (16, 16), interpolation=cv2.INTER_AREA), (128, 128),
                        interpolation=cv2.INTER_LINEAR)
    refined = np.clip(guided_filter(image, smoothstep(coarse), 2, 1e-3), 0, 1)
    assert np.abs(refined - disc).mean() < 0.5 * np.abs(coarse - disc).mean()
