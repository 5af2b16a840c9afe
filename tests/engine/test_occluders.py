"""Hands in front of the head leave the matte (``engine.preprocess.occluders``)."""
from __future__ import annotations

import numpy as np

from engine.context import RunContext
from engine.preprocess import occluders


def _hand(cx=60.0, cy=70.0, r=20.0):
    a = np.linspace(0, 2 * np.pi, 21, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def test_hand_polygon_mask_covers_the_hand_grown_by_the_fingers_width():
    m = occluders.hand_polygon_mask(_hand(), 128)
    assert m[70, 60] and m[70, 60 + 22] and not m[70, 60 + 30] and not m[5, 5]
    assert not occluders.hand_polygon_mask(np.zeros((21, 2)), 128).any()  # degenerate: nothing


def test_no_hand_found_in_the_portrait(portrait_array):
    crop = np.ascontiguousarray(portrait_array[:400, 50:450])
    assert occluders.find_hands(crop) == []


def test_remove_hands_cuts_the_matte_and_warns(monkeypatch, tmp_path):
    monkeypatch.setattr(occluders, "find_hands", lambda crop, confidence=0.5: [_hand()])
    ctx = RunContext()
    alpha = np.full((128, 128), 255, np.uint8)
    out = occluders.remove_hands(np.zeros((128, 128, 3), np.uint8), alpha, tmp_path / "p.jpg", ctx)
    assert out[70, 60] == 0 and out[5, 5] == 255
    assert [w["code"] for w in ctx.warnings] == ["occluder_hand"] and "p.jpg" in ctx.warnings[0]["message"]
