"""The projection backend on the real chain: portrait → preprocess → prior → projection."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.context import RunContext
import trimesh

from engine.multiview import _fill, projection
from recon.export import BLENDER_TO_YUP
from recon.texture import texel_geometry


@pytest.fixture(scope="module")
def chain(portrait_path, tmp_path_factory):
    from engine import preprocess, prior

    out = tmp_path_factory.mktemp("chain")
    ctx = RunContext()
    pre = preprocess.run(portrait_path, out, preprocess.PreprocessConfig(size=256), ctx)
    head = prior.run(pre, out, prior.PriorConfig(model="template"), ctx)
    return out, pre, head


def test_portrait_chain(chain, monkeypatch, tmp_path):
    out, pre, head = chain
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # keep the UV cache out of the user's home
    cfg = projection.ProjectionConfig(n_views=4, size=96, texture_size=256)
    ctx = RunContext()
    res = projection.run(pre.crop, head, out, cfg, ctx)
    # Landmarks come from input/landmarks.json: skin is lighter than hair on this portrait.
    skin, hair = np.array(res.colours["skin"]), np.array(res.colours["hair"])
    assert skin.mean() > hair.mean() + 0.1 and skin[0] > skin[2]
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 4 and meta["input_frame"]["w"] == 256
    for frame in meta["frames"]:
        alpha = np.asarray(Image.open(out / frame["file_path"]))[..., 3]
        assert 0.05 < (alpha > 0).mean() < 0.8
    # The frontal view shows the photo's face: its centre matches the crop's face colours.
    front = np.asarray(Image.open(out / meta["frames"][2]["file_path"]))  # azimuth 0
    assert front[40:56, 40:56, 3].min() == 255
    assert np.abs(front[40:56, 40:56, :3].mean((0, 1)) / 255 - skin).max() < 0.2
    # The unseen scalp is hair, not bald skin; ears, nose and neck stay skin.
    assert res.colours["hair_state"] == "seen"
    frame = _fill.HeadFrame.from_vertices(head.vertices)
    hairness = _fill.hair_prior(head.vertices, frame=frame)
    v = head.vertices
    back_top = (v[:, 1] > 0.05) & (v[:, 2] > 0.0)
    assert hairness[np.argmax(v[:, 2])] > 0.95 and hairness[back_top].mean() > 0.9
    assert hairness[np.argmin(v[:, 1])] < 0.05 and hairness[v[:, 2] < -0.1].max() < 0.05  # nose tip, neck
    assert len(frame.ears) == 2 and hairness[frame.ear_weight(v) > 0.99].max() < 0.05
    mesh = trimesh.load(res.mesh_path, force="mesh", process=False)
    geo = texel_geometry(mesh.vertices @ BLENDER_TO_YUP, mesh.faces, mesh.visual.uv, mesh.faces, 256)
    tex = res.texture[geo.rows, geo.cols].astype(np.float32) / 255
    p = geo.points
    back = tex[(p[:, 1] > 0.06) & (p[:, 2] > 0.02)].mean(0)
    assert np.linalg.norm(back - hair) < 0.5 * np.linalg.norm(back - skin)


def _texels(res, size):
    from skimage.color import rgb2lab

    mesh = trimesh.load(res.mesh_path, force="mesh", process=False)
    geo = texel_geometry(mesh.vertices @ BLENDER_TO_YUP, mesh.faces, mesh.visual.uv, mesh.faces, size)
    tex = res.texture[geo.rows, geo.cols].astype(np.float64) / 255
    return geo.points, rgb2lab(tex[None])[0], res.seen[geo.rows, geo.cols]


def test_fill_matches_the_photo_hair_and_the_neck_stays_skin(chain, monkeypatch, tmp_path):
    """The unseen hair has the lightness and hue of the projected hair next to it (was ΔE 13,
    ΔL −13 on the demo portrait); the black collar is not painted on the neck."""
    out, pre, head = chain
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = projection.ProjectionConfig(n_views=1, size=64, texture_size=256)
    res = projection.run(pre.crop, head, out, cfg, RunContext())
    p, lab, seen = _texels(res, 256)
    frame = _fill.HeadFrame.from_vertices(head.vertices)
    h = _fill.hair_prior(head.vertices, p, frame)
    photo = np.median(lab[(h > 0.9) & (seen >= cfg.full_weight)], 0)
    fill = np.median(lab[(h > 0.9) & (seen == 0) & (p[:, 1] > 0)], 0)
    assert abs(photo[0] - fill[0]) < 6 and np.linalg.norm(photo[1:] - fill[1:]) < 4
    neck = p[:, 2] < -0.12  # below the jaw, the template's neck
    assert neck.sum() > 500 and (lab[neck, 0] < 35).mean() < 0.005
    skin_l = rgb2lab_one(res.colours["skin"])[0]
    assert np.median(lab[neck, 0]) > skin_l - 15


def rgb2lab_one(c):
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(c, np.float64)[None, None])[0, 0]
