"""engine.multiview.projection on a synthetic head (an ellipsoid) and a rendered crop."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.ndimage import maximum_filter

from engine.context import RunContext
from engine.errors import BadInput
from engine.multiview import _fill, projection
from recon.cameras import from_frame, orbit_camera
from recon.export import BLENDER_TO_YUP
from recon.raster import interpolate, rasterize, visible_vertices
from recon.texture import texel_geometry

SIZE = 128


def _head():
    m = trimesh.creation.icosphere(subdivisions=3)
    return m.vertices * np.array([0.075, 0.095, 0.11]), m.faces


def _pattern(p):
    """Colours symmetric in x (so the mirror image is the truth), never black."""
    return np.stack([0.5 + 0.35 * np.sin(30 * p[:, 2]), 0.2 + 0.7 * (p[:, 0] / 0.075) ** 2,
                     0.5 + 0.35 * np.cos(25 * p[:, 1])], -1).clip(0, 1)


def _crop(v, f, cam):
    frags = rasterize(v, f, cam)
    rgb = interpolate(_pattern(v), frags)
    rgba = np.concatenate([rgb, frags.mask[..., None]], -1)
    return np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def side_run(tmp_path_factory):
    """Input camera at azimuth 60°: it sees the +X side; the −X side needs the mirror."""
    v, f = _head()
    cam = orbit_camera(60, 0, 0.6, 30, SIZE)
    prior = SimpleNamespace(vertices=v, faces=f, camera=cam)
    run_dir = tmp_path_factory.mktemp("proj")
    cfg = projection.ProjectionConfig(n_views=8, size=64, texture_size=256, supersample=2, cache_uv=False)
    ctx = RunContext()
    res = projection.run(_crop(v, f, cam), prior, run_dir, cfg, ctx)
    return SimpleNamespace(v=v, f=f, cam=cam, prior=prior, run_dir=run_dir, cfg=cfg, res=res, ctx=ctx)


def test_writes_views_transforms_and_mesh(side_run):
    r = side_run
    meta = json.loads((r.run_dir / "transforms.json").read_text())
    assert len(meta["frames"]) == 8 and "input_frame" in meta
    assert r.res.mesh_path == r.run_dir / "mesh" / "head.glb"
    mesh = trimesh.load(r.res.mesh_path, force="mesh", process=False)
    assert mesh.visual.material.metallicFactor == 0.0
    assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
    verts = mesh.vertices @ BLENDER_TO_YUP  # glTF (Y up) → Blender world
    for frame in meta["frames"]:
        rgba = np.asarray(Image.open(r.run_dir / frame["file_path"]))
        assert rgba.shape == (64, 64, 4)
        alpha = rgba[..., 3]
        assert (alpha == 0).any() and (alpha == 255).any()  # background and foreground
        cam = from_frame(meta, frame)
        vis = visible_vertices(verts, mesh.faces, cam, eps=2e-3)
        uv, _ = cam.project(verts[vis])
        px = np.clip(np.floor(uv).astype(int), 0, 63)
        inside = alpha[px[:, 1], px[:, 0]] > 0
        # Silhouette vertices lie on the coverage edge: allow them one pixel (a wrong camera
        # convention would miss by tens of pixels), and most must hit exactly.
        near = maximum_filter(alpha, size=3)[px[:, 1], px[:, 0]] > 0
        assert near.mean() >= 0.99 and inside.mean() >= 0.9


def test_mirror_fills_occluded_side(side_run, tmp_path):
    r = side_run
    # Texels on the far side (x < −0.04) the input camera cannot see.
    uvs, faces_uv = _uv_of(r.res.mesh_path)
    geo = texel_geometry(r.v, r.f, uvs, faces_uv, 256)
    far = geo.points[:, 0] < -0.04
    got = r.res.texture[geo.rows, geo.cols].astype(np.float32) / 255
    truth = _pattern(geo.points)
    err_mirror = np.abs(got[far] - truth[far]).mean()
    cfg = projection.ProjectionConfig(n_views=1, size=32, texture_size=256, mirror=False, cache_uv=False)
    plain = projection.run(_crop(r.v, r.f, r.cam), r.prior, tmp_path, cfg, RunContext())
    got_plain = plain.texture[geo.rows, geo.cols].astype(np.float32) / 255
    err_plain = np.abs(got_plain[far] - truth[far]).mean()
    assert err_mirror < 0.06
    assert err_plain > 2 * err_mirror


def _uv_of(glb):
    """The GLB's UVs and faces (its vertices are split at seams; faces index both)."""
    mesh = trimesh.load(glb, force="mesh", process=False)
    return np.asarray(mesh.visual.uv), np.asarray(mesh.faces)


def test_texture_has_no_unfilled_texels(side_run):
    r = side_run
    uvs, faces_uv = _uv_of(r.res.mesh_path)
    geo = texel_geometry(r.v, r.f, uvs, faces_uv, 256)
    tex = r.res.texture[geo.rows, geo.cols]
    assert tex.max(axis=1).min() > 20  # no black texel inside the charts


def test_bad_inputs(side_run, tmp_path):
    r = side_run
    good = _crop(r.v, r.f, r.cam)
    cfg = projection.ProjectionConfig(n_views=1, size=32, texture_size=64, cache_uv=False)
    with pytest.raises(BadInput, match="crop.png: crop must be square RGBA"):
        projection.run(good[..., :3], r.prior, tmp_path, cfg, RunContext())
    empty = good.copy()
    empty[..., 3] = 0
    with pytest.raises(BadInput, match="matte is empty"):
        projection.run(empty, r.prior, tmp_path, cfg, RunContext())
    bad_prior = SimpleNamespace(vertices=r.v, faces=r.f + 10_000, camera=r.cam)
    with pytest.raises(BadInput, match="prior"):
        projection.run(good, bad_prior, tmp_path, cfg, RunContext())
    with pytest.raises(ValueError, match="unknown projection settings"):
        projection.ProjectionConfig.from_dict({"n_view": 4})
    with pytest.raises(ValueError, match="unknown layout"):
        projection.ProjectionConfig(layout="nope")
    assert not (tmp_path / "views").exists()


def test_skin_and_hair_from_landmarks():
    crop = np.zeros((100, 100, 3), np.float32)
    crop[:20] = (0.2, 0.1, 0.05)  # hair band on top
    crop[20:] = (0.8, 0.6, 0.5)  # skin below
    alpha = np.ones((100, 100), bool)
    lm = np.full((478, 2), 50.0)
    lm[_fill.FOREHEAD_TOP_ID] = (50, 25)
    skin, hair, found = _fill.skin_and_hair(crop, alpha, lm, np.zeros((0, 3)))
    assert found
    np.testing.assert_allclose(skin, (0.8, 0.6, 0.5), atol=1e-6)
    np.testing.assert_allclose(hair, (0.2, 0.1, 0.05), atol=1e-6)
    # Nothing in the foreground above the forehead: the default hair colour, flagged.
    _, hair2, found2 = _fill.skin_and_hair(crop, np.arange(100)[:, None] > 30 + np.zeros((1, 100)), lm, np.zeros((0, 3)))
    assert not found2 and np.allclose(hair2, _fill.DEFAULT_HAIR)


def test_diffuse_fill_keeps_observed_and_reaches_prior():
    v, f = _head()
    observed = np.tile([1.0, 0.0, 0.0], (len(v), 1))
    weight = (v[:, 1] < -0.06).astype(float)  # only the face is seen
    prior = np.tile([0.0, 0.0, 1.0], (len(v), 1))
    out = _fill.diffuse_fill(v, f, observed, weight, prior, decay_length=0.02)
    assert out[weight > 0, 0].min() > 0.9
    assert out[v[:, 1] > 0.08, 2].min() > 0.9  # the back takes the prior colour
    hair = _fill.hair_prior(v)
    assert hair[np.argmax(v[:, 2])] > 0.9 and hair[np.argmin(v[:, 2])] < 0.1
    assert hair[np.argmin(v[:, 1])] < 0.1  # the face (front) is not hair


def test_uv_atlas_cache(side_run, tmp_path, monkeypatch):
    """The atlas of a topology is cached and reused; a corrupt cache file is recomputed."""
    r = side_run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = projection.ProjectionConfig(texture_size=128)
    prior = SimpleNamespace(vertices=r.v, faces=r.f, camera=r.cam)
    first = projection._atlas(r.v, np.asarray(r.f), prior, cfg)
    files = list((tmp_path / "cache" / "gen3dface" / "uv").glob("*.npz"))
    assert len(files) == 1
    moved = SimpleNamespace(vertices=r.v * 1.1, faces=r.f, camera=r.cam)  # same topology, other shape
    second = projection._atlas(r.v * 1.1, np.asarray(r.f), moved, cfg)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    files[0].write_bytes(b"not an npz")
    third = projection._atlas(r.v, np.asarray(r.f), prior, cfg)
    np.testing.assert_array_equal(third[1], first[1])


def test_bald_scalp_stays_skin_and_hair_is_found_beside_the_face():
    skin_c, hair_c = (0.8, 0.6, 0.5), (0.3, 0.2, 0.1)
    crop = np.zeros((100, 100, 3), np.float32)
    crop[:] = skin_c
    alpha = np.ones((100, 100), bool)
    lm = np.full((478, 2), 50.0)
    lm[_fill.FOREHEAD_TOP_ID] = (50, 25)
    bald = _fill.estimate_colours(crop, alpha, lm, np.zeros((0, 3)))
    assert bald.hair_state == "bald" and np.allclose(bald.hair, bald.skin)
    # a little skin-coloured noise above the forehead is still bald; a hair-coloured top is not
    crop[:20, ::2] = hair_c
    mixed = _fill.estimate_colours(crop, alpha, lm, np.zeros((0, 3)))
    assert mixed.hair_state == "seen" and np.allclose(mixed.hair, hair_c, atol=1e-6)


def test_prior_keeps_its_detail_and_meets_the_photo():
    """The fill corrects the prior toward the photo smoothly; the prior's own edges stay sharp."""
    v, f = _head()
    observed = np.tile([1.0, 0.0, 0.0], (len(v), 1))
    weight = (v[:, 1] < -0.06).astype(float)
    prior = np.where((v[:, 2] > 0.05)[:, None], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])  # a sharp edge at the back
    out = _fill.diffuse_fill(v, f, observed, weight, prior, decay_length=0.02)
    far = v[:, 1] > 0.06
    assert np.abs(out[far] - prior[far]).max() < 0.05
    assert out[weight > 0, 0].min() > 0.9


def test_ear_gate_rejects_non_skin_on_ears_only():
    m = trimesh.creation.icosphere(subdivisions=3)
    v = m.vertices * np.array([0.075, 0.095, 0.11])
    frame = _fill.HeadFrame(0.11, 0.07, np.zeros(2), np.array([[0.075, 0.0, -0.02]]))
    skin = np.array([0.8, 0.6, 0.5])
    dark = np.tile([0.2, 0.15, 0.1], (len(v), 1))
    gate = _fill.ear_gate(v, dark, skin, frame)
    on_ear = frame.ear_weight(v) > 0.99
    assert on_ear.any() and gate[on_ear].max() < 0.01
    assert np.all(gate[frame.ear_weight(v) == 0] == 1)
    assert np.all(_fill.ear_gate(v, np.tile(skin, (len(v), 1)), skin, frame) == 1)


def test_hair_over_the_temples_lowers_the_side_hairline():
    v, _ = _head()
    frame = _fill.HeadFrame.from_vertices(v)
    _, theta = frame.azimuth(v)
    temple = (np.abs(np.degrees(np.abs(theta)) - 55) < 10) & (v[:, 2] > 0.045) & (v[:, 2] < 0.065)
    assert temple.any()
    bare = _fill.hair_prior(v, frame=frame, side_hair=0.0)
    covered = _fill.hair_prior(v, frame=frame, side_hair=1.0)
    assert covered[temple].mean() > bare[temple].mean() + 0.2
    assert np.allclose(covered[v[:, 1] > 0.08], bare[v[:, 1] > 0.08])  # the back is unchanged


def test_clothing_below_the_jaw_is_masked_and_the_chin_underside_gated():
    skin = np.array([0.8, 0.6, 0.5], np.float32)
    crop = np.tile(skin, (100, 100, 1))
    crop[80:, :] = 0.05  # a black collar
    crop[85:, 35:55] = skin * 0.6  # a shadowed neck (same hue, darker): still skin
    alpha = np.ones((100, 100), bool)
    lm = np.full((478, 2), 50.0)
    oval = np.array(_fill.FACE_OVAL_IDS)
    ang = np.linspace(0, 2 * np.pi, len(oval), endpoint=False)
    lm[oval] = np.stack([50 + 25 * np.sin(ang), 40 - 30 * np.cos(ang)], -1)
    lm[list(_fill.JAW_IDS)] = [(30, 55), (70, 55)]
    cloth = _fill.clothing_mask(crop, alpha, lm, skin)
    assert cloth[82:, :30].all() and cloth[82:, 70:].all()
    assert not cloth[:50].any() and not cloth[90:, 40:50].any()
    assert not _fill.clothing_mask(crop, alpha, None, skin).any()
    pts = np.zeros((3, 3))
    normals = np.array([[0, 0, -1.0], [0, -1.0, 0], [0, 0, -1.0]])
    gate = _fill.chin_gate(pts, normals, np.array([90.0, 90.0, 40.0]), lip_row=60.0)
    np.testing.assert_allclose(gate, [0, 1, 1])


def test_hair_colour_from_projected_texels():
    skin, crop_hair, lit = np.array([0.8, 0.6, 0.5]), np.array([0.3, 0.3, 0.1]), np.array([0.6, 0.5, 0.3])
    cols = _fill.Colours(skin.astype(np.float32), crop_hair.astype(np.float32), "seen", 0.05)
    n = 1000
    tex_c = np.tile(lit, (n, 1))
    tex_c[:100] = skin  # skin texels on the scalp's edge do not count
    out = _fill.hair_from_texels(cols, tex_c, np.full(n, 0.5), np.ones(n), 0.3)
    np.testing.assert_allclose(out.hair, lit, atol=0.01)
    # Too few texels (or not seen fully): the crop's estimate stays.
    assert np.allclose(_fill.hair_from_texels(cols, tex_c, np.full(n, 0.1), np.ones(n), 0.3).hair, crop_hair)
    bald = _fill.Colours(cols.skin, cols.skin, "bald", 0.0)
    assert _fill.hair_from_texels(bald, tex_c, np.full(n, 0.5), np.ones(n), 0.3) is bald


def test_bake_projector_agrees_with_the_texel_projection():
    """The backend's projection (``recon.bake.point_projector``, depth-map occlusion) against
    ``recon.texture.project_points`` (z-buffer face ids) on the same points: the same colours,
    the same points seen but a few on the silhouette, the same weights but a few on the matte border."""
    from recon.bake import point_projector
    from recon.raster import vertex_normals
    from recon.texture import project_points

    v, f = _head()
    n = vertex_normals(v, f)
    cam = orbit_camera(25, 10, 0.6, 30.0, SIZE)
    rng = np.random.default_rng(0)
    img = rng.uniform(0.1, 0.9, (SIZE, SIZE, 3)).astype(np.float32)
    mask = rasterize(v, f, cam).face_id >= 0
    pts = np.concatenate([v, 0.5 * (v[f[:, 0]] + v[f[:, 1]])])  # vertices and edge midpoints
    nrm = np.concatenate([n, n[f[:, 0]] + n[f[:, 1]]])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    kw = dict(angle_power=2.0, min_cos=0.2, cos_ramp=0.25, eps=0.002)
    c_ref, w_ref = project_points(pts, nrm, v, f, img, cam, mask, border_px=6.0, **kw)
    c, w = point_projector(img, cam, mask, v, f, 6.0)(pts, nrm, **kw)
    both = (w > 0) & (w_ref > 0)
    assert both.sum() > 0.3 * len(pts) and ((w > 0) != (w_ref > 0)).mean() < 0.03
    assert np.abs(c - c_ref)[both].max() < 1e-4
    assert np.median(np.abs(w - w_ref)[both]) < 1e-4 and np.mean(np.abs(w - w_ref)[both] > 0.05) < 0.05
