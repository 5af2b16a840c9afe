"""``gen3dface bake --align auto`` from face landmarks (engine/landmark_align.py).

The run shows the project's synthetic textured head (``synthetic_heads.truth_head``: the
template textured from the bundled portrait, on which mediapipe finds the face); the
artist's mesh is the same head, with its texture, in its own frame and units.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

import tests.engine.synthetic_heads as syn
from recon.cameras import orbit_camera, to_transforms
from recon.export import write_glb
from tests.engine.cli_helpers import run_cli

S = 256
AXIS = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])


def _rotation(degrees: float, axis=AXIS) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


ROT, SCALE, SHIFT = _rotation(150.0), 1.7, np.array([0.2, -0.1, 0.35])


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    return syn.truth_head(tmp_path_factory.mktemp("truth"))


@pytest.fixture(scope="module")
def views(truth):
    """8 lit views at 256² around the head (elevations ±20°): (rgb, camera, mask) like ``bake``'s."""
    from engine.multiview._shade import render_rgba

    out = []
    for i in range(8):
        cam = orbit_camera(360.0 * i / 8, 20.0 * np.sin(np.pi * i / 4 + 0.5), 0.7, 30.0, S)
        rgba = render_rgba(truth.vertices, truth.faces, truth.uvs, truth.normals, truth.texture, cam,
                           ambient=0.45, ss=1, closed=True)
        out.append((rgba[..., :3].astype(np.float32) / 255, cam, rgba[..., 3] > 127, rgba))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, truth, views):
    """A run directory of those views + mesh/head.glb (the head the bake aligns onto)."""
    root = tmp_path_factory.mktemp("face_run")
    (root / "views").mkdir()
    names = []
    for i, (*_, rgba) in enumerate(views):
        names.append(f"views/view_{i:03d}.png")
        Image.fromarray(rgba).save(root / names[-1])
    (root / "transforms.json").write_text(json.dumps(to_transforms([v[1] for v in views], names)))
    write_glb(root / "mesh" / "head.glb", truth.vertices, truth.faces)
    return root


def _errors(matrix, scale, moved, original):
    """(max point error in metres, rotation error in degrees) of the recovered mesh → run map."""
    m = np.asarray(matrix)
    back = moved @ m[:3, :3].T + m[:3, 3]
    r_est = m[:3, :3] / scale
    cos = (np.trace(r_est @ ROT) - 1) / 2  # r_est should be ROT⁻¹
    return float(np.abs(back - original).max()), float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@pytest.mark.slow
def test_landmarks_recover_a_large_similarity(tmp_path, run, truth):
    """150° about a non-axis direction, ×1.7, shifted: recovered within 1 mm and 1°."""
    moved = SCALE * truth.vertices @ ROT.T + SHIFT
    mesh = write_glb(tmp_path / "artist.glb", moved, truth.faces, truth.uvs,
                     np.rint(truth.texture * 255).astype(np.uint8))
    out = tmp_path / "baked"
    r = run_cli("bake", run, "--mesh", mesh, "-o", out, "--size", S, "--align", "auto", "--json")
    assert r.code == 0, r.stderr[-3000:]
    info = json.loads((out / "bake.json").read_text())
    a = info["alignment"]
    assert a["method"] == "landmarks" and info["warnings"] == []
    err, deg = _errors(a["matrix"], a["scale"], moved, truth.vertices)
    assert err < 1e-3 and deg < 1.0, (err, deg)
    assert a["landmarks_used"] >= 300 and a["landmark_rms_mm"] < 3.0 and a["residual_mm"] < 1.0
    assert abs(a["scale"] - 1 / SCALE) < 1e-3 and a["seconds"]["total"] > 0
    assert info["coverage"] > 0.8  # 8 views within ±20° of the equator: crown and under-chin unseen


def _with_plinth(truth):
    """The head standing on a box plinth (a third of the mesh's area): extra geometry the run's head lacks."""
    box = trimesh.creation.box(extents=(0.36, 0.26, 0.12)).subdivide().subdivide()
    bv = np.asarray(box.vertices) + np.array([0.0, 0.03, -0.25])
    v = np.vstack([truth.vertices, bv])
    f = np.vstack([truth.faces, np.asarray(box.faces) + len(truth.vertices)])
    uvs = np.vstack([truth.uvs, np.full((len(bv), 2), 0.02)])
    return v, f, uvs


def test_landmarks_align_a_head_on_a_plinth_the_shape_path_cannot(truth, views):
    from engine.landmark_align import align

    v, f, uvs = _with_plinth(truth)
    moved = SCALE * v @ ROT.T + SHIFT
    warned = []
    found = align(moved, f, uvs, truth.texture, [x[:3] for x in views], truth.vertices, truth.faces,
                  warn=lambda *w: warned.append(w))
    assert found.method == "landmarks" and not warned
    err, deg = _errors(found.similarity.matrix, found.similarity.scale, moved, v)
    assert err < 1e-3 and deg < 1.0, (err, deg)
    # the shape-only candidate is far off (the plinth dominates the mesh's shape), and its
    # landmarks disagree: that is why it lost despite its lower trimmed residual
    rep = found.report
    assert rep["candidate_landmark_rms_mm"]["shape"] > 20 and rep["candidate_landmark_rms_mm"]["landmarks"] < 3
    assert rep["icp_samples_used"] < 0.8 * rep["icp_samples"]  # the plinth took no part in ICP
    # the shape path's free-scale ICP once shrank this mesh to a point (scale 0, residual 0)
    assert rep["candidate_scale"]["shape"] * SCALE > 0.2


def test_faceless_mesh_falls_back_to_shape_with_a_warning(truth, views):
    """A textureless blob (rendered shaded: no face in any of the 48 candidate views)."""
    from engine.landmark_align import align

    s = trimesh.creation.icosphere(3)
    d = np.asarray(s.vertices)
    v = d * 0.1 * (1 + 0.1 * np.sin(3 * d[:, 0]))[:, None] * np.array([0.8, 1.0, 1.2])
    warned = []
    found = align(v, s.faces, None, None, [x[:3] for x in views], truth.vertices, truth.faces,
                  warn=lambda *w: warned.append(w))
    assert found.method == "shape" and [w[0] for w in warned] == ["align_no_landmarks"]
    assert "no face found on the mesh" in found.report["fallback_reason"] and found.report["mesh_views_tried"] == 48
    assert len(found.report["run_views_with_face"]) >= 2  # the run's side did find the face
    assert found.report["candidate_residual_mm"].keys() == {"shape"}
