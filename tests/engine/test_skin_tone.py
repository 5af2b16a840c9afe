"""Invented skin matches the photo's skin for light and dark skin (``engine.multiview._skin``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.multiview import _skin
from tests.engine import synthetic_heads as syn


def _sphere_normals(s: int = 64):
    rows, cols = np.mgrid[:s, :s] + 0.5
    x, z = (cols - s / 2) / (s / 2), -(rows - s / 2) / (s / 2)
    inside = x ** 2 + z ** 2 < 0.95
    y = -np.sqrt(np.clip(1 - x ** 2 - z ** 2, 0, 1))  # facing the camera on −Y
    return np.stack([x, y, z], -1), inside


def test_shading_field_recovers_a_known_light():
    n, inside = _sphere_normals()
    albedo = np.array([0.5, 0.35, 0.25])
    light = np.array([0.4, 0.1, -0.5, 0.2])  # ambient, x, y, z (lit from the front, a little above)
    shade = light[0] + n @ light[1:]
    crop = (albedo * shade[..., None]).clip(0, 1)
    to_cam = np.array([0.0, -1.0, 0.0])
    field, fitted = _skin.shading_field(crop, inside, n, inside, to_cam)
    assert fitted is not None
    expected = shade / (light[0] + light[1:] @ to_cam)
    inner = (np.linalg.norm(n[..., [0, 2]], axis=-1) < 0.8) & (np.abs(expected - 1) < 0.25)  # off the rim (blur), within MAX_GAIN
    assert np.abs(field[inner] - expected[inner]).max() < 0.03
    flat = crop[inner] / field[inner][:, None]
    assert np.abs(flat - albedo * (light[0] + 0.5)).max() < 0.02  # one colour once de-shaded


def test_tone_blends_face_into_neck_below_the_chin():
    tone = _skin.SkinTone(np.array([0.8, 0.6, 0.5], np.float32), np.array([0.6, 0.4, 0.3], np.float32), chin_z=0.0)
    p = np.array([[0, 0, 0.1], [0, 0, 0.0], [0, 0, -0.1]], np.float64)
    c = tone.colour_at(p)
    assert np.allclose(c[0], tone.face) and np.allclose(c[2], tone.neck)
    assert np.all((c[1] < tone.face) & (c[1] > tone.neck))


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    return syn.truth_head(tmp_path_factory.mktemp("truth"))


@pytest.mark.slow
@pytest.mark.parametrize("tone", list(syn.SKIN_TONES))
def test_invented_ear_and_neck_skin_match_the_cheeks(truth, tone, tmp_path):
    """CIE76 ΔE ≤ 8 between the seen cheeks and the invented ears / back of the neck in unlit views
    (the synthetic photo is shaded: ambient 0.45 + a headlight). Measured: ≤ 6.2 (ears, lightest
    tone) and ≤ 4.6 (neck); without the de-shading the neck reaches 8.0."""
    photo = syn.photo(syn.toned(truth, syn.SKIN_TONES[tone]), 0)
    head, res, pres, split = syn.run_projection([photo], tmp_path)
    de = syn.skin_delta_e(head, res, pres[0], split)
    assert set(de) == {"ear", "neck"}
    assert max(de.values()) <= 8.0, de
