"""recon.api.reconstruct end to end (tiny), config handling, bad priors."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from recon.api import ReconConfig, config_from_dict, load_prior, reconstruct
from recon.errors import ReconInputError
from recon.harness import blob, cameras, smoothed_prior, write_dataset

TINY = ReconConfig(steps=20, batch_rays=256, resolution=48, texture_size=128, target_faces=1000, prior_grid=48,
                   occupancy_resolution=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    mesh = blob(subdivisions=3)
    return write_dataset(mesh, cameras(6, 48), tmp_path_factory.mktemp("blob")), mesh


def test_reconstruct_writes_textured_glb_and_obj(dataset, tmp_path):
    path, mesh = dataset
    calls = []
    result = reconstruct(path, tmp_path / "out", TINY, prior=smoothed_prior(mesh),
                         progress=lambda s, n, m: calls.append((s, n)))
    assert result.mesh_glb.is_file() and result.mesh_obj.is_file()
    assert (tmp_path / "out" / "mesh.mtl").is_file() and (tmp_path / "out" / "mesh.png").is_file()
    assert calls[-1] == (20, 20) and result.metrics["backend"] == "torch-cpu"
    assert 0 < result.metrics["faces"] <= 1000
    scene = trimesh.load(result.mesh_glb)
    geom = next(iter(scene.geometry.values()))
    assert geom.visual.uv is not None and len(geom.faces) == result.metrics["faces"]
    # GLB is Y-up: its Y extent is the world's Z extent (the blob is tallest along Z)
    ext = np.ptp(geom.vertices, axis=0)
    assert ext[1] == pytest.approx(np.ptp(mesh.vertices[:, 2]), rel=0.15)
    _assert_clean_files(result)


def _assert_clean_files(result):
    """The files on disk, read back and UV seams merged, are one watertight 2-manifold piece
    without zero-area faces (issue 13: the in-memory mesh being clean is not enough)."""
    from recon.mesh import topology_report

    for path in (result.mesh_glb, result.mesh_obj):
        back = trimesh.load(path, force="mesh")
        back.merge_vertices(merge_tex=True, merge_norm=True)
        report = topology_report(back.vertices, back.faces)
        assert report == {"boundary_edges": 0, "nonmanifold_edges": 0, "components": 1, "zero_area_faces": 0}, \
            (path.name, report)
        assert back.is_winding_consistent and back.is_watertight, path.name


def test_prior_from_file(dataset, tmp_path):
    _, mesh = dataset
    v, f = smoothed_prior(mesh)
    trimesh.Trimesh(v, f, process=False).export(tmp_path / "prior.ply")
    lv, lf = load_prior(tmp_path / "prior.ply")
    assert np.allclose(lv, v) and np.array_equal(lf, f)


@pytest.mark.parametrize("prior, words", [
    ("missing.obj", "not found"),
    ((np.zeros((3, 2)), np.zeros((1, 3), int)), "vertices"),
    ((np.zeros((3, 3)), np.array([[0, 1, 5]])), "out-of-range"),
    ((np.full((3, 3), np.nan), np.array([[0, 1, 2]])), "non-finite"),
])
def test_bad_prior(tmp_path, prior, words):
    if isinstance(prior, str):
        prior = tmp_path / prior
    with pytest.raises(ReconInputError, match=words):
        load_prior(prior)


def test_unreadable_prior_file(tmp_path):
    (tmp_path / "bad.obj").write_text("this is not a mesh\n")
    with pytest.raises(ReconInputError, match="bad.obj"):
        load_prior(tmp_path / "bad.obj")


def test_bad_transforms_raises_input_error(tmp_path):
    with pytest.raises(ReconInputError, match="not found"):
        reconstruct(tmp_path / "nope.json", tmp_path / "out", TINY)


def test_config_from_dict():
    assert config_from_dict({"steps": 5}).steps == 5
    with pytest.raises(ValueError, match="stepz"):
        config_from_dict({"stepz": 5})


def test_recon_never_imports_engine():
    import subprocess
    import sys

    code = ("import sys, recon.api, recon.harness, recon.mesh; "
            "bad = [m for m in sys.modules if m == 'engine' or m.startswith('engine.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_template_uv_layout(dataset, tmp_path):
    """uv_layout="template": the prior's own UV layout, transferred onto the recon surface."""
    from dataclasses import replace

    from recon.uv import unwrap
    from recon.uv_transfer import closest_faces

    path, mesh = dataset
    pv, pf = smoothed_prior(mesh)
    _, pfu, puv = unwrap(pv, pf, resolution=128, padding=2)
    result = reconstruct(path, tmp_path / "out", replace(TINY, uv_layout="template"), prior=(pv, pf),
                         prior_uv=(puv, pfu))
    back = trimesh.load(result.mesh_glb, force="mesh", process=False)
    v = back.vertices @ np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # glTF Y-up → world
    face, bary = closest_faces(v, pv, pf)
    expected = np.einsum("nk,nkc->nc", bary, puv[pfu[face]])
    err = np.linalg.norm(back.visual.uv - expected, axis=1)
    assert np.median(err) < 1e-3  # the template's UVs (seam faces' corners are extended, hence median)
    _assert_clean_files(result)
    with pytest.raises(ReconInputError, match="template"):
        reconstruct(path, tmp_path / "out2", replace(TINY, uv_layout="template"), prior=(pv, pf))
