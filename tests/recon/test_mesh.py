"""recon.mesh: marching cubes, cleanup, decimation; recon.sampling: the prior's SDF grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.errors import ReconError
from recon.mesh import (boundary_loops, clean_mesh, close_small_holes, decimate, keep_largest_component,
                        marching_cubes_mesh, sdf_volume, topology_report, weld)
from recon.sampling import SceneBox, mesh_sdf_grid

BOX = SceneBox(np.array([0.1, 0.0, -0.2]), 0.5)


def _sphere_fn(r=0.6, c=(0.0, 0.0, 0.0)):
    return lambda x: (x - torch.tensor(c)).norm(dim=-1) - r


def _sphere_mesh(res=48, r=0.6, c=(0.0, 0.0, 0.0)):
    return marching_cubes_mesh(sdf_volume(_sphere_fn(r, c), res, coarse=32), BOX)


def test_marching_cubes_sphere_in_world_units_outward():
    v, f = _sphere_mesh()
    radius = np.linalg.norm(v - BOX.centre, axis=1)
    assert np.allclose(radius, 0.6 * BOX.scale, rtol=0.02)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = ((v[f].mean(1) - BOX.centre) * n).sum(1)
    assert (out > 0).mean() > 0.99  # counter-clockwise seen from outside
    assert boundary_loops(f) == []  # closed


def test_band_volume_matches_dense_evaluation():
    fn = _sphere_fn(0.5)
    vol = sdf_volume(fn, 80, coarse=32)
    axis = torch.linspace(-1, 1, 80)
    dense = fn(torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)).reshape(80, 80, 80)
    near = dense.abs() < 0.1
    assert np.allclose(vol[near.numpy()], dense[near].numpy(), atol=1e-5)
    assert np.array_equal(np.sign(vol), np.sign(dense.numpy()))


def test_no_surface_is_an_error():
    with pytest.raises(ReconError, match="no zero crossing"):
        marching_cubes_mesh(np.ones((8, 8, 8), np.float32), BOX)


def test_keep_largest_component_drops_floaters():
    v1, f1 = _sphere_mesh(r=0.5)
    v2, f2 = _sphere_mesh(res=24, r=0.1, c=(0.8, 0.8, 0.8))
    v, f = np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])
    kv, kf = keep_largest_component(v, f)
    assert len(kf) == len(f1) and len(kv) == len(v1)


def test_close_small_holes_and_keep_big_ones():
    v, f = _sphere_mesh()
    centre = v[f].mean(1)
    top = centre[:, 2] > centre[:, 2].max() - 0.01  # a small cap
    holed = f[~top]
    assert len(boundary_loops(holed)) == 1
    cv, cf = close_small_holes(v, holed, max_edges=64)
    assert boundary_loops(cf) == [] and len(cv) == len(v) + 1
    # the patch is wound like the surface around it: every edge is walked once each way,
    # and the patch's normals point outward and agree with the rim faces they touch
    directed = np.concatenate([cf[:, [0, 1]], cf[:, [1, 2]], cf[:, [2, 0]]])
    assert len({tuple(e) for e in directed.tolist()}) == len(directed)  # no edge walked twice the same way
    normal = np.cross(cv[cf[:, 1]] - cv[cf[:, 0]], cv[cf[:, 2]] - cv[cf[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    patch = np.arange(len(holed), len(cf))
    assert len(patch) >= 3
    assert (((cv[cf[patch]].mean(1) - BOX.centre) * normal[patch]).sum(1) > 0).all()  # outward
    rim = np.array([i for i in range(len(holed)) if np.isin(holed[i], cf[patch]).sum() >= 2])
    assert len(rim) >= len(patch)
    for p in patch:
        touching = rim[np.isin(holed[rim], cf[p]).sum(1) == 2]  # the rim face across the patch's outer edge
        assert len(touching) == 1 and normal[touching[0]] @ normal[p] > 0.5
    big = f[centre[:, 2] < BOX.centre[2]]  # a hemisphere: the rim is a big hole
    _, bf = close_small_holes(v, big, max_edges=16)
    assert len(boundary_loops(bf)) == 1


def test_decimate_and_clean_reach_target():
    v, f = _sphere_mesh()
    dv, df = decimate(v, f, 500)
    assert 400 <= len(df) <= 520 and df.max() < len(dv)
    cv, cf = clean_mesh(v, f, 300)
    assert len(cf) <= 320 and boundary_loops(cf) == []


def test_prior_sdf_grid_of_a_sphere():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    box = SceneBox(np.zeros(3), 0.5)
    grid = mesh_sdf_grid(np.asarray(s.vertices), np.asarray(s.faces), box, res=40)
    axis = np.linspace(-1, 1, 40)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    exact = np.linalg.norm(pts, axis=-1) - 0.6  # radius 0.3 m / scale 0.5
    assert np.abs(grid - exact).max() < 0.03  # far field from a distance transform: under a voxel
    near = np.abs(exact) < 0.1
    assert np.abs(grid[near] - exact[near]).max() < 0.01


def _with_sliver(v, f, gap=1e-8):
    """Split one edge (a, b) by a vertex ``gap`` (relative) from a: two zero-area slivers."""
    a, b, c = f[0]
    other = np.nonzero(((f == b) | (f == a)).sum(1) == 2)[0]
    other = other[other != 0][0]
    d = [x for x in f[other] if x not in (a, b)][0]
    e = len(v)
    v2 = np.vstack([v, v[a] + gap * (v[b] - v[a])])
    f2 = np.vstack([np.delete(f, [0, other], 0), [[a, e, c], [e, b, c], [e, a, d], [b, e, d]]])
    return v2, f2


def test_weld_removes_slivers_and_keeps_a_clean_mesh():
    import trimesh

    sphere = trimesh.creation.icosphere(2, radius=0.1)
    v, f = _with_sliver(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    assert topology_report(v, f, area_tol=1e-9)["zero_area_faces"] == 2  # two slivers
    w, g = weld(v, f, 1e-7)
    assert topology_report(w, g) == {"boundary_edges": 0, "nonmanifold_edges": 0, "components": 1,
                                     "zero_area_faces": 0}
    assert len(g) == len(sphere.faces) and len(w) == len(sphere.vertices)
    # clean_mesh welds too (its default tolerance is relative to the mesh's size)
    cv, cf = clean_mesh(v, f, target_faces=10_000)
    assert topology_report(cv, cf)["zero_area_faces"] == 0


def test_several_holes_each_get_their_own_patch_and_the_limit_is_inclusive():
    """A one-triangle hole (3 edges), a small cap and a big rim in one mesh: both small ones
    are found and closed, each around its own new centre vertex; the limit counts edges."""
    v, f = _sphere_mesh()
    centre = v[f].mean(1)
    cap = centre[:, 2] > centre[:, 2].max() - 0.01  # a small cap at the top
    low = np.argmin(centre[:, 2])  # one triangle at the bottom
    side = np.abs(centre[:, 0] - BOX.centre[0] - 0.6 * BOX.scale) < 0.03  # a band: a big hole
    holed = f[~(cap | side | (np.arange(len(f)) == low))]
    loops = boundary_loops(holed)
    sizes = sorted(len(loop) for loop in loops)
    assert len(loops) == 3 and sizes[0] == 3 and sizes[-1] > 16, sizes
    small = sizes[1]
    cv, cf = close_small_holes(v, holed, max_edges=small)  # the cap's loop is exactly at the limit
    assert len(cv) == len(v) + 2 and len(cf) == len(holed) + 3 + small
    assert sorted(len(loop) for loop in boundary_loops(cf)) == [sizes[-1]]  # only the big hole is left
    new = cf[len(holed):]
    assert set(np.unique(new[:, 2])) == {len(v), len(v) + 1}  # one centre per patch
    for c in (len(v), len(v) + 1):  # each centre is the mean of its own ring
        ring = np.unique(new[new[:, 2] == c][:, :2])
        assert len(ring) in (3, small) and np.allclose(cv[c], cv[ring].mean(0), atol=1e-12)
    _, cf2 = close_small_holes(v, holed, max_edges=small - 1)  # one edge under: the cap stays open
    assert sorted(len(loop) for loop in boundary_loops(cf2)) == [small, sizes[-1]]
    mv, mf = clean_mesh(v, holed, target_faces=len(holed) + 100, max_hole_edges=small)
    assert sorted(len(loop) for loop in boundary_loops(mf)) == [sizes[-1]]


def _ico(sub=1, r=0.1):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    return np.asarray(s.vertices), np.asarray(s.faces, np.int64)


def _same_layout(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 3


def test_uv_layout_dispatch():
    """xatlas directly under the face limit (or with no limit), on a proxy above it, the template's
    layout by closest point; bad layouts are errors."""
    from recon.mesh import uv_layout
    from recon.uv import unwrap
    from recon.uv_transfer import proxy_unwrap, transfer_uvs

    v, f = _ico(1)  # 80 faces
    direct = unwrap(v, f, resolution=64)
    assert _same_layout(uv_layout(v, f, 64, unwrap_faces=80), direct)  # at the limit: direct
    assert _same_layout(uv_layout(v, f, 64, unwrap_faces=0), direct)  # no limit
    assert not _same_layout(unwrap(v, f, resolution=256), direct)  # the size reaches xatlas
    proxy = uv_layout(v, f, 64, unwrap_faces=40)
    assert _same_layout(proxy, proxy_unwrap(v, f, 40, resolution=64)) and not _same_layout(proxy, direct)
    tv, tf = _ico(2)
    tmap, tfuv, tuvs = unwrap(tv, tf, resolution=64)
    template = (tv[tmap], tfuv, tuvs, tfuv)
    assert _same_layout(uv_layout(v, f, 64, "template", template=template), transfer_uvs(*template, v, f))
    with pytest.raises(ValueError, match="needs a prior mesh"):
        uv_layout(v, f, 64, "template")
    with pytest.raises(ValueError, match="unknown uv layout 'cube'"):
        uv_layout(v, f, 64, "cube")


def test_bake_texture_from_one_view_fills_the_rest_from_the_colour_field():
    """A red view of the front of a sphere: the texels it sees are red, most others take the
    colour field's blue (the rest blend in from the seen side); the coverage mask is 255 exactly where the view saw."""
    from recon.bake import BakeConfig
    from recon.cameras import orbit_camera
    from recon.mesh import bake_texture

    v, f = _ico(2)
    cam = orbit_camera(0.0, 0.0, 0.5, 40.0, 32)
    image = np.zeros((32, 32, 3), np.float32)
    image[..., 0] = 1.0
    calls = []

    def blue(p):
        calls.append(len(p))
        return np.tile([0.0, 0.0, 1.0], (len(p), 1))

    nv, fuv, uvs, tex, cover, stats = bake_texture(v, f, [(image, cam, None)], 32, blue, unwrap_faces=5000,
                                                   bake_config=BakeConfig(size=1024))
    assert tex.shape == (32, 32, 3) and tex.dtype == np.uint8 and cover.shape == (32, 32)
    assert len(nv) == len(uvs) and fuv.max() == len(nv) - 1 and len(fuv) == len(f)
    assert set(np.unique(cover)) <= {0, 255}
    assert 0.1 < stats["texture_coverage"] < 0.9 and 0.05 < stats["texture_autofilled"] < 0.9 and calls
    assert stats["bake_seconds"] > 0
    seen = cover == 255
    assert (tex[seen] == [255, 0, 0]).all(1).mean() > 0.9
    other = ~seen & (tex.sum(-1) > 0)  # texels off the atlas stay black
    assert other.any() and (tex[other] == [0, 0, 255]).all(1).mean() > 0.6  # the rest: blended at the rim
    assert (tex[seen][:, 2] == 0).all()  # no blue where the view saw
    assert np.allclose(np.linalg.norm(nv, axis=1), 0.1)  # positions of the sphere's own vertices


def test_export_writes_coverage_glb_and_obj(tmp_path):
    from recon.mesh import export

    v, f = _ico(1)
    uvs = np.zeros((len(v), 2))
    tex = np.full((4, 4, 3), 9, np.uint8)
    glb, obj = export(tmp_path / "out", "head", v, f, uvs, tex, coverage=np.full((4, 4), 255, np.uint8))
    assert (glb, obj) == (tmp_path / "out" / "head.glb", tmp_path / "out" / "head.obj")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["head.glb", "head.mtl", "head.obj", "head.png", "head_coverage.png", ]
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "out" / "head_coverage.png")).tolist() == [[255] * 4] * 4
    export(tmp_path / "plain", "x", v, f, uvs, tex)
    assert "x_coverage.png" not in [p.name for p in (tmp_path / "plain").iterdir()]


def test_band_volume_of_an_off_centre_sphere_and_the_coarse_field_elsewhere():
    """Off-centre (the axes are told apart), exact in the band, and elsewhere the coarse grid's
    trilinear upsampling (corners aligned), checked against scipy's zoom of the coarse grid."""
    from scipy import ndimage

    c = (0.3, -0.15, 0.1)
    fn = _sphere_fn(0.4, c)
    evaluated = []

    def counting(x):
        evaluated.append(len(x))
        return fn(x)

    vol = sdf_volume(counting, 61, coarse=16)
    axis = np.linspace(-1, 1, 61)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    dense = np.linalg.norm(pts - np.array(c), axis=-1) - 0.4
    near = np.abs(dense) < 2 / 15  # within a coarse cell of the surface: exact
    assert np.abs(vol[near] - dense[near]).max() < 1e-5
    a16 = np.linspace(-1, 1, 16)
    low = np.linalg.norm(np.stack(np.meshgrid(a16, a16, a16, indexing="ij"), -1) - np.array(c), axis=-1) - 0.4
    up = ndimage.zoom(low, 61 / 16, order=1, grid_mode=False)
    far = np.abs(dense) > 0.6
    assert far.sum() > 1000 and np.abs(vol[far] - up[far]).max() < 1e-4
    assert evaluated[0] == 16**3 and 0.05 * 61**3 < sum(evaluated[1:]) < 0.4 * 61**3  # a band, not everything


def test_volume_at_or_below_the_coarse_size():
    fn = _sphere_fn(0.5, (0.2, 0.0, -0.1))
    a = np.linspace(-1, 1, 16)
    exact = fn(torch.tensor(np.stack(np.meshgrid(a, a, a, indexing="ij"), -1).reshape(-1, 3))).numpy().reshape(16, 16, 16)
    assert np.allclose(sdf_volume(fn, 16, coarse=16), exact, atol=1e-6)
    small = sdf_volume(fn, 9, coarse=16)
    assert small.shape == (9, 9, 9) and small[0, 0, 0] == pytest.approx(exact[0, 0, 0], abs=1e-6)
    assert small[-1, -1, -1] == pytest.approx(exact[-1, -1, -1], abs=1e-6)


@pytest.mark.parametrize("vol", [np.zeros((6, 6, 6)), -np.ones((6, 6, 6)),
                                 np.pad(np.ones((4, 4, 4)), 1), -np.pad(np.ones((4, 4, 4)), 1)])
def test_no_strict_zero_crossing_is_an_error(vol):
    with pytest.raises(ReconError, match=r"^the reconstructed SDF has no zero crossing \(no surface\)$"):
        marching_cubes_mesh(vol.astype(np.float32), BOX)


def test_marching_cubes_orients_outward_even_for_an_inside_out_sdf():
    from recon.mesh import _signed_volume

    vol = sdf_volume(_sphere_fn(0.5), 24, coarse=24)
    for v, f in (marching_cubes_mesh(vol, BOX), marching_cubes_mesh(-vol, BOX)):
        expected = 4 / 3 * np.pi * (0.5 * BOX.scale) ** 3
        assert _signed_volume(v - BOX.centre, f) == pytest.approx(expected, rel=0.03)


def test_signed_volume_of_a_tetrahedron():
    from recon.mesh import _signed_volume

    v = np.array([[0.0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [0, 0, 4.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward
    assert _signed_volume(v, f) == pytest.approx(2 * 3 * 4 / 6)
    assert _signed_volume(v, f[:, ::-1]) == pytest.approx(-4.0)


def test_topology_report_by_hand():
    # one triangle of area 1 (legs 2 and 1) in a box of diagonal² 5, an unused vertex
    v = np.array([[0.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [9.0, 9, 9]])[:3]
    f = np.array([[0, 1, 2]])
    r = topology_report(v, f, area_tol=0.2)  # area 1 ≤ 0.2 · 5: zero-area, at the limit
    assert r == {"boundary_edges": 3, "nonmanifold_edges": 0, "components": 1, "zero_area_faces": 1}
    assert topology_report(v, f, area_tol=0.1999)["zero_area_faces"] == 0
    v2 = np.vstack([v, [[5.0, 5, 5]]])  # an unused vertex is no component
    assert topology_report(v2, f)["components"] == 1
    fin = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # three faces on edge (0, 1)
    v3 = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]])
    r = topology_report(v3, fin)
    assert r["nonmanifold_edges"] == 1 and r["boundary_edges"] == 6 and r["components"] == 1


def test_weld_puts_the_merged_vertex_at_the_mean_and_drops_every_collapsed_face():
    v = np.array([[0.0, 0, 0], [1e-9, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    f = np.array([[2, 3, 0], [1, 2, 0], [0, 3, 1], [2, 4, 3]])  # face 1 collapses on corners 0/2, face 2 on 0/2
    w, g = weld(v, f, 1e-6)
    assert len(w) == 4 and len(g) == 2
    assert np.allclose(w[g[0, 2]], [5e-10, 0, 0], atol=1e-15)  # the mean of the pair
    assert np.array_equal(np.sort(g, 1), np.sort(np.array([[1, 2, 0], [1, 3, 2]]), 1))


def test_clean_mesh_weld_tolerance_is_relative_to_the_size():
    import trimesh

    sphere = trimesh.creation.icosphere(2, radius=10.0)  # a 35 m diagonal: the tolerance is 35 µm
    v, f = _with_sliver(np.asarray(sphere.vertices), np.asarray(sphere.faces), gap=1e-6)
    cv, cf = clean_mesh(v, f, target_faces=10_000)
    assert topology_report(cv, cf)["zero_area_faces"] == 0 and len(cv) == len(sphere.vertices)


def test_cleaning_steps_log_what_they_did(caplog):
    import logging

    import trimesh

    sphere = trimesh.creation.icosphere(2, radius=0.1)
    v, f = _with_sliver(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    with caplog.at_level(logging.INFO, logger="recon.mesh"):
        weld(v, f, 1e-7)
        mv, mf = _sphere_mesh()
        centre = mv[mf].mean(1)
        close_small_holes(mv, mf[centre[:, 2] < centre[:, 2].max() - 0.01])
        sdf_volume(_sphere_fn(0.5), 40, coarse=20)
    messages = [r.getMessage() for r in caplog.records]
    assert "welded 1 vertex pairs closer than 1.0e-07 m" in messages
    assert "closed 1 small holes" in messages
    band = [m for m in messages if m.startswith("marching-cubes volume 40³: ")]
    assert len(band) == 1
    n, pct = band[0].split(": ")[1].split(" points evaluated exactly (")
    assert float(pct.rstrip("%)")) == pytest.approx(100 * int(n) / 40**3, abs=0.051) and 0 < int(n) < 40**3
