"""Golden values from the references' own formulas (no reference checkout needed).

SyncDreamer (``sync_dreamer_utils.project_and_normalize`` with ``camera-16.pkl``): a world point X
lands on latent-pixel *index* (K/8 · (R X + t)) / z, sampled with align_corners=True; the poses
are look-at cameras at distance 1.5, elevation 30°, azimuth 22.5°·i from +X toward +Y, fx = 280
and cx = cy = 128 at 256². Morphable (``facescape.py``): round((v − min)/0.005), grid
(ceil((max − min)/0.005) | 3) + 1.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weights import conventions


def _reference_syncdreamer_index(point, view: int) -> tuple[float, float]:
    """The reference's latent index of ``point`` in view ``view``, written out by hand."""
    az, el = math.radians(22.5 * view), math.radians(30.0)
    eye = 1.5 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    fwd = -eye / 1.5
    right = np.array([-math.sin(az), math.cos(az), 0.0])  # forward × Z, unit
    down = np.cross(fwd, right)
    p = np.asarray(point, dtype=float) - eye
    x, y, z = right @ p, down @ p, fwd @ p
    return 35.0 * x / z + 16.0, 35.0 * y / z + 16.0  # K·(32/256): f 35, c 16


def _our_latent_index(point, view: int) -> tuple[float, float]:
    """Our path: conventions → checkpoint cameras → the network's pixel convention → geometry.project."""
    from engine.multiview.diffusion import frames, geometry

    conv = conventions.syncdreamer()
    cam = frames.CheckpointFrame(conv).checkpoint_cameras()[view]
    c2w, intr = geometry.camera_tensors([cam], dtype=torch.float64)
    intr[:, 2:] += frames.pixel_offset(conv, 256, 32)
    uv, _ = geometry.project(torch.tensor([point], dtype=torch.float64), c2w, intr)
    # align_corners=False over a 32-wide latent: continuous u/8 ↔ index u/8 − 0.5
    u, v = (uv[0, 0] / 8 - 0.5).tolist()
    return u, v


def test_syncdreamer_hand_values():
    # the origin is on every optical axis: the centre index of the 32² latent
    for view in range(16):
        assert np.allclose(_reference_syncdreamer_index((0, 0, 0), view), (16, 16), atol=1e-12)
    # (0.5, 0, 0) seen from view 0 (camera on +X, 30° up): straight below the centre
    u, v = _reference_syncdreamer_index((0.5, 0, 0), 0)
    assert u == pytest.approx(16.0) and v == pytest.approx(16 + 8.75 / (1.5 - 0.25 * math.sqrt(3)))
    # +Y is to the image right from view 0; seen from view 4 (camera on +Y) it is straight below
    assert _reference_syncdreamer_index((0, 0.5, 0), 0)[0] > 16
    assert _reference_syncdreamer_index((0, 0.5, 0), 4) == pytest.approx((16.0, v))


@pytest.mark.parametrize("view", range(16))
def test_syncdreamer_points_land_on_the_reference_latent_indices(view):
    rng = np.random.default_rng(view)
    for point in [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.5, -0.5, 0.5), *rng.uniform(-0.5, 0.5, (5, 3))]:
        assert _our_latent_index(point, view) == pytest.approx(_reference_syncdreamer_index(point, view), abs=1e-9)


def test_syncdreamer_intrinsics_and_layout():
    conv = conventions.syncdreamer()
    fx, fy, cx, cy = conv.intrinsics
    assert (fx, cx) == (280.0, 128.0)
    assert math.degrees(2 * math.atan(128 / fx)) == pytest.approx(49.13, abs=0.01)
    assert conv.azimuths_deg[1] == 22.5 and set(conv.elevations_deg) == {30.0}
    assert (conv.eta, conv.input_latent, conv.pixel_convention) == (1.0, "sample", "latent_index")


def test_morphable_layout_fov_and_embedding():
    conv = conventions.morphable()
    assert math.degrees(2 * math.atan(128 / conv.intrinsics[0])) == pytest.approx(9.47, abs=0.01)
    assert conv.azimuths_deg[0] == -90.0 and conv.azimuths_deg[-1] == 90.0 and set(conv.elevations_deg) == {0.0}
    for yaw, w2c in zip(conv.azimuths_deg, conv.w2c):  # camera at 4.5·(sin yaw, 0, cos yaw), looking at 0
        m = np.eye(4)
        m[:3] = w2c
        centre = np.linalg.inv(m)[:3, 3]
        b = math.radians(yaw)
        assert centre == pytest.approx(4.5 * np.array([math.sin(b), 0, math.cos(b)]), abs=1e-9)
        assert np.asarray(w2c)[2, :3] @ -centre == pytest.approx(4.5)  # +z ahead, toward the origin
        assert np.asarray(w2c)[1, 1] == pytest.approx(-1.0)  # image down = world −Y: the frame is Y-up
    assert conv.view_embedding == "constant" and conv.view_embedding_constant == (0.0, 0.0, 1.0, 0.0)


def test_morphable_voxelisation_golden():
    from engine.multiview.diffusion.sparse_conv import voxelize

    pts = torch.tensor([[0.0, 0.0, 0.0], [0.0124, 0.0026, 0.0101], [0.02, 0.01, 0.003]], dtype=torch.float64) + 0.3
    feats = torch.arange(3, dtype=torch.float64)[:, None]
    vox, origin, shape = voxelize(pts, feats, 0.005, "morphable")
    # round((p − min)/0.005): (2.48, 0.52, 2.02) → (2, 1, 2); (4, 2, 0.6) → (4, 2, 1); stored (b, z, y, x)
    got = {tuple(c[1:].tolist()): float(f) for c, f in zip(vox.coords, vox.feats[:, 0])}
    assert got == {(0, 0, 0): 0.0, (2, 1, 2): 1.0, (1, 2, 4): 2.0}
    # ceil((0.02, 0.01, 0.0101)/0.005) = (4, 2, 3) (x, y, z) → (n | 3) + 1 = (8, 4, 4) → (D, H, W) = (4, 4, 8)
    assert shape == (4, 4, 8)
    assert origin.tolist() == pytest.approx([0.3, 0.3, 0.3])  # no padding


def test_flame_placement_follows_generate_face():
    """A FLAME-frame point goes where generate_face.py puts it: ×1.087, pose, +T, ×2.5, FaceScape axes."""
    v = np.array([0.01, 0.02, 0.03])
    r = conventions.rodrigues(conventions.MORPHABLE_FLAME_POSE)
    hand = 2.5 * (1.087 * (r @ v) + np.array(conventions.MORPHABLE_FLAME_T))
    hand = np.array([hand[0], hand[2], -hand[1]])
    m = conventions.morphable_checkpoint_from_flame()
    assert m[:3, :3] @ v + m[:3, 3] == pytest.approx(hand, abs=1e-12)
    # Rodrigues against a closed form: a quarter turn about X sends +Y to +Z
    assert conventions.rodrigues((math.pi / 2, 0, 0)) @ [0, 1, 0] == pytest.approx([0, 0, 1], abs=1e-12)
