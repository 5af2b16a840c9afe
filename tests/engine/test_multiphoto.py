"""Several photos of one person: CLI rules, fusion, and the gain a side photo brings."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.multiview import _align, _fuse
from tests.engine import synthetic_heads as syn
from tests.engine.cli_helpers import assert_one_line_error, run_cli
from tests.engine.images import with_exif_orientation


def test_more_than_16_photos_refused(tmp_path, portrait_path):
    out = tmp_path / "run"
    result = run_cli("generate", *([portrait_path] * 17), "-o", out)
    assert_one_line_error(result, "17 photos", "at most 16")
    assert not out.exists()


def test_fuse_prefers_the_squarely_seen_photo_and_sums_weights():
    c = [np.array([[1.0, 0, 0], [1.0, 0, 0]]), np.array([[0, 1.0, 0], [0, 1.0, 0]])]
    w = [np.array([0.9, 0.0]), np.array([0.3, 0.5])]
    colour, weight = _fuse.fuse(c, w)
    assert np.allclose(weight, [1.2, 0.5])
    assert colour[0, 0] == pytest.approx(0.81 / 0.9) and np.allclose(colour[1], [0, 1, 0])


def test_exposure_gain_matches_a_darker_photo():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.8, (500, 3))
    gain = _fuse.exposure_gain(ref, np.ones(500), ref * np.array([0.5, 0.7, 0.9]), np.ones(500))
    assert np.allclose(gain, [1.6, 1 / 0.7, 1 / 0.9], atol=1e-3)
    assert np.allclose(_fuse.exposure_gain(ref, np.zeros(500), ref, np.ones(500)), 1)  # nothing shared


def test_deshading_reference_leaves_out_pixels_kept_as_taken_and_clipped():
    rng = np.random.default_rng(1)
    albedo = rng.uniform(0.3, 0.8, (600, 3))
    factor = np.r_[np.full(200, 1.0), np.full(100, 1 / 1.4), rng.uniform(0.75, 0.95, 300)]
    raw = albedo * factor[:, None]
    ok = _fuse.deshaded_reference(raw, albedo, 1.4)
    assert not ok[:300].any() and ok[300:].all()
    assert _fuse.deshaded_reference(raw[:400], albedo[:400], 1.4).all()  # too few left: all are used


def test_shading_residual_takes_out_a_gain_and_a_linear_shading_only():
    rng = np.random.default_rng(2)
    n = rng.normal(size=(400, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    a = rng.uniform(0.2, 0.8, (400, 3))
    b = a / (np.array([0.9, 1.0, 1.1]) + (n @ np.array([0.2, -0.1, 0.15]))[:, None])  # lit otherwise
    assert np.abs(_align._shading_residual(a, b, n)).max() < 1e-9
    shifted = np.roll(b, 1, axis=0)  # the same photo misregistered: not explained away
    assert np.sqrt(np.mean(_align._shading_residual(a, shifted, n) ** 2)) > 0.05


def test_orbit_about_the_head_is_a_turn_of_the_camera_around_it():
    from recon.cameras import orbit_camera

    cam = orbit_camera(10, 5, 0.7, 30.0, 64)
    axis = cam.w2c[:3, :3] @ np.array([0.0, 0.0, 1.0])  # world Z in camera axes
    a = np.radians(20)
    out = _align.orbit_moved(cam, np.r_[-a * axis, 0, 0, 0], np.zeros(3))
    assert np.allclose(out.c2w, orbit_camera(30, 5, 0.7, 30.0, 64).c2w, atol=1e-9)
    shifted = _align.orbit_moved(cam, np.r_[0.1, -0.2, 0.05, 0, 0, 0, np.log(1.2)], np.array([0.01, 0.02, 0.03]))
    assert np.linalg.norm(shifted.center - [0.01, 0.02, 0.03]) == pytest.approx(np.linalg.norm(cam.center - [0.01, 0.02, 0.03]))
    assert shifted.fx == pytest.approx(cam.fx * 1.2) and shifted.cx == cam.cx


def test_mirror_fill_yields_to_a_photo_of_that_side():
    first = np.array([0.3, 0.3, 0.9])
    cos = np.array([-0.5, -0.5, 0.9])  # the input view faces away from the first two points
    out = _fuse.demote_mirror(first, cos, [np.array([0.5, 0.0, 0.5])], 0.2, 0.25, 0.3)
    assert out[0] == 0 and out[1] == pytest.approx(0.3) and out[2] == pytest.approx(0.9)


@pytest.mark.slow
def test_faceless_photo_is_named_and_nothing_written(tmp_path, portrait_path, portrait_array):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 200, 3), 180, np.uint8)).save(blank)
    out = tmp_path / "run"
    result = run_cli("generate", portrait_path, blank, "-o", out, "--views", "2", "--resolution", "128")
    assert_one_line_error(result, "wall.png", "no face", "--skip-bad")  # several photos: how to go on
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir() if p != blank)


@pytest.mark.slow
def test_skip_bad_uses_the_rest_mixed_sizes_and_exif(tmp_path, portrait_path, portrait_array):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 200, 3), 180, np.uint8)).save(blank)
    small = np.asarray(Image.fromarray(portrait_array).resize((384, 384)))
    rotated = with_exif_orientation(tmp_path / "rotated.jpg", small, 6)
    out = tmp_path / "run"
    result = run_cli("generate", blank, portrait_path, rotated, "-o", out, "--skip-bad", "--json",
                     "--views", "2", "--resolution", "128")
    assert result.code == 0, result.stderr[-2000:]
    manifest = json.loads((out / "result.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in manifest["photos"]] == ["astronaut.png", "rotated.jpg"]
    assert any(w["code"] == "photo_skipped" and "wall.png" in w["message"] for w in manifest["warnings"])
    params = json.loads((out / "prior" / "params.json").read_text())
    assert len(params["photos"]) == 2 and (out / "extra" / "01" / "input" / "crop.png").is_file()


@pytest.fixture(scope="module")
def marked_truth(tmp_path_factory):
    """A toned synthetic head with a mark only its +X side shows."""
    truth = syn.truth_head(tmp_path_factory.mktemp("truth"))
    return syn.with_side_mark(syn.toned(truth, syn.SKIN_TONES["IV"]))


@pytest.mark.slow
def test_a_side_photo_improves_the_side_views(marked_truth, tmp_path):
    """Front + 45° photo vs the front alone: side views (30–105°) closer to the true renders.

    Measured here: +3.41 dB (20.86 → 24.27 dB on the head's pixels), the issue's target:
    the side photo's light is fitted only where the input view's albedo is truly de-shaded
    (+1.87 → +2.16 dB) and its camera is registered with a shading-aware cost, jointly with
    the input view's (→ +3.12 dB), on all the points both photos see (not a random 1,000 of
    them: → +3.41 dB; see README). Dropping the side photo gives +0, and a misregistered one
    (the landmark camera alone, 15° short of the turn) lowers it."""
    t = marked_truth
    front, side = syn.photo(t, 0), syn.photo(t, 45)
    azimuths = (30, 45, 60, 75, 90, 105)
    h1, r1, _ = syn.run_photos([front], tmp_path / "one")
    h2, r2, extras = syn.run_photos([front, side], tmp_path / "two")
    assert len(extras) == 1
    one, two = syn.view_psnr(h1, r1, t, azimuths), syn.view_psnr(h2, r2, t, azimuths)
    assert two >= one + 3.0, (one, two)
    assert syn.view_psnr(h2, r2, t, (0,)) >= syn.view_psnr(h1, r1, t, (0,)) - 0.5  # the front stays
