"""recon.export: GLB / OBJ round trips through trimesh."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from recon.export import BLENDER_TO_YUP, write_glb, write_obj
from recon.uv import unwrap


@pytest.fixture
def textured():
    box = trimesh.creation.box(extents=(0.2, 0.3, 0.4))
    box.apply_translation((0.0, 0.0, 0.1))  # Z up: the top is at z = 0.3
    vmap, faces, uvs = unwrap(box.vertices, box.faces, resolution=64, padding=2)
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return box.vertices[vmap], faces, uvs, tex


def _glb_json(path):
    data = path.read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20 : 20 + n])


def test_glb_round_trip(tmp_path, textured):
    v, f, uv, tex = textured
    normals = trimesh.Trimesh(v, f, process=False).vertex_normals
    path = write_glb(tmp_path / "head.glb", v, f, uv, tex, normals)
    assert [p.name for p in tmp_path.iterdir()] == ["head.glb"]  # no temp file left
    mat = _glb_json(path)["materials"][0]["pbrMetallicRoughness"]
    assert mat["metallicFactor"] == 0.0 and mat["roughnessFactor"] == pytest.approx(0.6)
    assert "baseColorTexture" in mat
    back = trimesh.load(path, force="mesh", process=False)
    # Y-up in the file: Blender's (x, y, z) is glTF's (x, z, −y); the top (max z) is max y.
    np.testing.assert_allclose(back.vertices, v @ BLENDER_TO_YUP.T, atol=1e-6)
    assert back.vertices[:, 1].max() == pytest.approx(0.3)
    np.testing.assert_array_equal(back.faces, f)
    np.testing.assert_allclose(back.visual.uv, uv, atol=1e-6)
    assert back.visual.material.metallicFactor == 0.0
    np.testing.assert_array_equal(np.asarray(back.visual.material.baseColorTexture.convert("RGB")), tex)
    np.testing.assert_allclose(back.vertex_normals, normals @ BLENDER_TO_YUP.T, atol=1e-5)


def test_glb_untextured(tmp_path, textured):
    v, f, _, _ = textured
    path = write_glb(tmp_path / "plain.glb", v, f)
    back = trimesh.load(path, force="mesh", process=False)
    assert len(back.faces) == len(f)
    assert _glb_json(path)["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0


def test_obj_round_trip(tmp_path, textured):
    v, f, uv, tex = textured
    path = write_obj(tmp_path / "head.obj", v, f, uv, tex)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.mtl", "head.obj", "head.png"]
    back = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_allclose(back.vertices, v @ BLENDER_TO_YUP.T, atol=1e-5)
    np.testing.assert_allclose(back.visual.uv, uv, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.visual.material.image.convert("RGB")), tex)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda v, f, uv, t: (v[:, :2], f, uv, t), "vertices"),
        (lambda v, f, uv, t: (v, f + len(v), uv, t), "faces"),
        (lambda v, f, uv, t: (v, f, uv[:-1], t), "uvs"),
        (lambda v, f, uv, t: (v, f, uv, t.astype(np.float32)), "texture"),
        (lambda v, f, uv, t: (v, f, None, t), "uvs"),
    ],
)
def test_bad_input(tmp_path, textured, change, match):
    args = change(*textured)
    with pytest.raises(ValueError, match=match):
        write_glb(tmp_path / "x.glb", *args)
    assert not list(tmp_path.iterdir())


def test_obj_full_precision_keeps_close_vertices_apart(tmp_path):
    """Vertices 1e-7 apart stay apart when a reader merges the UV-seam copies (6 decimals merged them)."""
    sphere = trimesh.creation.icosphere(2, radius=0.1)
    v = np.asarray(sphere.vertices) + np.array([0.3, -0.2, 0.1])
    f = np.asarray(sphere.faces)
    # a second vertex 1e-7 m from vertex 0, used by two faces split off vertex 0's fan
    fan = np.nonzero((f == 0).any(1))[0][:2]
    v2 = np.vstack([v, v[0] + 1e-7])
    f2 = f.copy()
    f2[fan[0]][f2[fan[0]] == 0] = len(v)
    path = write_obj(tmp_path / "close.obj", v2, f2)
    back = trimesh.load(path, force="mesh")  # default processing merges coincident vertices
    assert len(back.vertices) == len(v2)
    np.testing.assert_array_equal(back.vertices, v2 @ BLENDER_TO_YUP.T)
