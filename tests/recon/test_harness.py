"""recon.harness: metrics on known meshes, rendering, and a small NeuS run to a bounded chamfer."""
from __future__ import annotations

import numpy as np
import pytest

from recon.api import ReconConfig
from recon.harness import blob, cameras, load_textured, render_rgba, run, surface_metrics, torus


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_metrics_of_identical_and_scaled_meshes():
    m = blob(subdivisions=3)
    same = surface_metrics((m.vertices, m.faces), (m.vertices, m.faces), n=5000)
    assert same["chamfer_pct"] < 0.05 and same["normal_consistency"] > 0.97
    bigger = surface_metrics((m.vertices * 1.05, m.faces), (m.vertices, m.faces), n=5000)
    assert 1.0 < bigger["chamfer_pct"] < 3.0  # ~5 % of a ~0.1 m radius over a ~0.36 m diagonal


def test_render_rgba_covers_the_object():
    t = torus()
    img = render_rgba(t, cameras(1, 32)[0])
    assert img.shape == (32, 32, 4) and img[..., 3].max() == 255 and img[0, 0, 3] == 0
    assert 0 < (img[..., 3] > 0).mean() < 0.6


def test_small_neus_run_reaches_bounded_chamfer(tmp_path):
    cfg = ReconConfig(steps=40, batch_rays=512, resolution=64, target_faces=3000, prior_grid=48,
                      occupancy_resolution=32, texture_size=256)
    out = run(blob(subdivisions=3), tmp_path, cfg, n_views=8, size=48, n_heldout=1, texture=True)
    assert out["psnr_textured"] > 20, out
    assert (tmp_path / "out" / "mesh.glb").is_file()
    assert out["chamfer_pct"] < 1.5, out
    assert out["normal_consistency"] > 0.95, out
    assert out["psnr"] > 20, out
    assert np.isfinite(out["seconds"])


def test_load_textured_any_mesh_file(tmp_path):
    import trimesh

    m = blob(subdivisions=2)
    colours = (np.c_[m.colours, np.ones(len(m.colours))] * 255).astype(np.uint8)
    trimesh.Trimesh(m.vertices, m.faces, vertex_colors=colours, process=False).export(tmp_path / "b.ply")
    loaded = load_textured(tmp_path / "b.ply", scale_to=None)
    assert np.allclose(loaded.colours, m.colours, atol=1 / 255)
    assert np.allclose(loaded.vertices, m.vertices - (m.vertices.min(0) + m.vertices.max(0)) / 2)


def test_small_run_without_prior_starts_from_the_visual_hull(tmp_path):
    cfg = ReconConfig(steps=40, batch_rays=512, resolution=64, target_faces=3000, prior_grid=48,
                      occupancy_resolution=32, texture=False)
    out = run(torus(), tmp_path, cfg, n_views=8, size=48, prior=False, n_heldout=1)
    assert out["chamfer_pct"] < 2.0, out  # a sphere init reached 2.5 % after 400 steps at 128 px
    assert out["normal_consistency"] > 0.8, out
