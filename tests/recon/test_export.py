"""recon.export: GLB / OBJ round trips through trimesh."""
from __future__ import annotations

import json
from pathlib import Path
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


TRI_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.5]])
TRI_F = np.array([[0, 1, 2]])


@pytest.mark.parametrize("with_uv, with_normals, face", [
    (True, True, "f 1/1/1 2/2/2 3/3/3"), (True, False, "f 1/1 2/2 3/3"),
    (False, True, "f 1//1 2//2 3//3"), (False, False, "f 1 2 3")])
def test_obj_text_of_one_triangle(tmp_path, with_uv, with_normals, face):
    """The exact OBJ lines, written by hand: Y-up vertices (x, z, −y), one-based faces, MTL values."""
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]]) if with_uv else None
    nrm = np.array([[0.0, 0.0, 1.0]] * 3) if with_normals else None
    tex = np.full((2, 2, 3), 7, np.uint8) if with_uv else None
    path = write_obj(tmp_path / "t.obj", TRI_V, TRI_F, uv, tex, nrm)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# Gen3D Face head (Y up, metres)", "mtllib t.mtl", "o t"]
    assert [l for l in lines if l.startswith("v ")] == ["v 0.0 0.0 0.0", "v 1.0 0.0 0.0", "v 0.0 0.5 -2.0"]
    assert [l for l in lines if l.startswith("vt ")] == (["vt 0.0 0.0", "vt 1.0 0.0", "vt 0.0 0.5"] if with_uv else [])
    assert [l for l in lines if l.startswith("vn ")] == (["vn 0.0 1.0 0.0"] * 3 if with_normals else [])
    assert lines[-2:] == ["usemtl head", face]
    mtl = (tmp_path / "t.mtl").read_text().splitlines()
    assert mtl[:8] == ["newmtl head", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1", "Pr 0.6", "Pm 0.0"]
    assert mtl[8:] == (["map_Kd t.png"] if with_uv else [])
    assert (tmp_path / "t.png").exists() == with_uv
    assert len([p for p in tmp_path.iterdir()]) == 2 + with_uv  # no temporary file left


def test_glb_material_and_normals_flag(tmp_path):
    path = write_glb(tmp_path / "t.glb", TRI_V, TRI_F, np.zeros((3, 2)), np.zeros((2, 2, 3), np.uint8))
    doc = _glb_json(path)
    mat = doc["materials"][0]
    assert mat["pbrMetallicRoughness"]["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]
    assert not mat.get("doubleSided", False) and mat.get("name") == "head"
    assert "NORMAL" not in doc["meshes"][0]["primitives"][0]["attributes"]  # none given: none written
    path = write_glb(tmp_path / "n.glb", TRI_V, TRI_F, vertex_normals=np.array([[0.0, 0, 1]] * 3))
    assert "NORMAL" in _glb_json(path)["meshes"][0]["primitives"][0]["attributes"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(vertices=np.array([[0.0, 0, np.nan]] * 3)), "vertices must be finite"),
    (dict(faces=np.array([[0, 1]])), "faces must be"),
    (dict(faces=np.array([[0, 1, -1]])), "faces must be"),
    (dict(faces=np.array([[0, 1, 3]])), "faces must be"),
    (dict(texture=np.zeros((2, 2), np.uint8), uvs=np.zeros((3, 2))), "texture must be"),
    (dict(texture=np.zeros((2, 2, 2), np.uint8), uvs=np.zeros((3, 2))), "texture must be"),
    (dict(texture=np.zeros((2, 2, 3), np.uint8)), "a texture needs uvs"),
    (dict(vertex_normals=np.zeros((2, 3))), "vertex_normals must be"),
])
def test_obj_bad_input_writes_nothing(tmp_path, kwargs, match):
    args = dict(vertices=TRI_V, faces=TRI_F) | kwargs
    with pytest.raises(ValueError, match=match):
        write_obj(tmp_path / "x.obj", **args)
    assert not list(tmp_path.iterdir())


def test_rgba_texture_and_empty_faces_are_accepted(tmp_path):
    write_glb(tmp_path / "a.glb", TRI_V, TRI_F, np.zeros((3, 2)), np.zeros((2, 2, 4), np.uint8))
    write_obj(tmp_path / "e.obj", TRI_V, np.zeros((0, 3), np.int64))
    assert (tmp_path / "a.glb").stat().st_size > 0 and "f " not in (tmp_path / "e.obj").read_text()


def test_atomic_write_cleans_up_on_failure_and_makes_folders(tmp_path):
    from recon.export import _atomic_write

    with pytest.raises(TypeError):
        _atomic_write(tmp_path / "x.bin", "not bytes")
    assert not list(tmp_path.iterdir())
    _atomic_write(tmp_path / "a" / "b" / "x.bin", b"abc")
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["x.bin"]


@pytest.mark.parametrize("channels", [3, 4])
def test_png16_read_back_by_opencv(tmp_path, channels):
    """The hand-encoded 16-bit PNG decodes (OpenCV's libpng, BGR order) to the same values."""
    import cv2

    from recon.export import write_png

    rng = np.random.default_rng(channels)
    img = rng.integers(0, 65536, (5, 7, channels)).astype(np.uint16)
    img[0, 0] = 0x0102  # byte order: big-endian in the file
    path = write_png(tmp_path / "d.png", img)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == img.shape
    order = [2, 1, 0] if channels == 3 else [2, 1, 0, 3]
    np.testing.assert_array_equal(back[..., order], img)
    assert [p.name for p in tmp_path.iterdir()] == ["d.png"]


def test_png8_grey_and_colour_and_bad_dtype(tmp_path):
    from PIL import Image

    from recon.export import png_bytes, write_png

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), grey)
    for bad in (np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.uint16), np.zeros((2, 2, 2), np.uint16)):
        with pytest.raises(ValueError, match="png: uint8 or uint16"):
            png_bytes(bad)


def test_to_srgb_pixels_rounds_and_clips():
    from recon.export import to_srgb_pixels

    t = np.array([[[-0.5, 0.0, 0.5], [1.0, 2.0, 0.2]]])
    p8 = to_srgb_pixels(t)
    assert p8.dtype == np.uint8 and p8.tolist() == [[[0, 0, 128], [255, 255, 51]]]  # 127.5+0.5, 51.0+0.5
    p16 = to_srgb_pixels(t, bits=16)
    assert p16.dtype == np.uint16 and p16.tolist() == [[[0, 0, 32768], [65535, 65535, 13107]]]
    with pytest.raises(ValueError, match="8 or 16"):
        to_srgb_pixels(t, bits=12)


def test_atomic_write_renames_a_hidden_temporary_from_the_same_folder(tmp_path, monkeypatch):
    """The temporary lies beside the target (a rename across file systems is not atomic)."""
    import os

    from recon.export import _atomic_write

    moves = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((Path(a), Path(b))), real(a, b)))
    _atomic_write(tmp_path / "x.bin", b"abc")
    (src, dst), = moves
    assert dst == tmp_path / "x.bin" and src.parent == tmp_path
    assert src.name.startswith(".x.bin.") and src.name.endswith(".tmp")


def test_glb_keeps_given_normals_and_coincident_vertices(tmp_path):
    """Normals are the caller's, not recomputed; vertices at one position stay apart (no processing)."""
    v = np.vstack([TRI_V, TRI_V[:1]])
    f = np.array([[0, 1, 2], [3, 2, 1]])
    normals = np.array([[0.0, 0, 1]] * 4)  # not the faces' normals
    path = write_glb(tmp_path / "n.glb", v, f, vertex_normals=normals)
    data = path.read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    doc, binary = json.loads(data[20:20 + n]), data[20 + n + 8:]
    acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["NORMAL"]]
    view = doc["bufferViews"][acc["bufferView"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stored = np.frombuffer(binary[start:start + 12 * acc["count"]], "<f4").reshape(-1, 3)
    np.testing.assert_allclose(stored, [[0.0, 1.0, 0.0]] * 4, atol=1e-6)  # Blender's +Z is glTF's +Y
    assert len(trimesh.load(path, force="mesh", process=False).vertices) == 4


def test_png16_chunks_by_hand():
    import zlib

    from recon.export import png_bytes

    data = png_bytes(np.zeros((2, 3, 3), np.uint16))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[8:33] == (b"\x00\x00\x00\x0dIHDR" + bytes([0, 0, 0, 3, 0, 0, 0, 2, 16, 2, 0, 0, 0])
                          + zlib.crc32(b"IHDR" + bytes([0, 0, 0, 3, 0, 0, 0, 2, 16, 2, 0, 0, 0])).to_bytes(4, "big"))
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the fixed empty IEND chunk


def test_writers_log_what_they_wrote(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="recon.export"):
        write_glb(tmp_path / "a.glb", TRI_V, TRI_F)
        write_obj(tmp_path / "a.obj", TRI_V, TRI_F)
    assert [r.getMessage() for r in caplog.records] == [
        f"wrote {tmp_path / 'a.glb'} (3 vertices, 1 faces)", f"wrote {tmp_path / 'a.obj'} (3 vertices, 1 faces)"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(faces=np.array([[0, 1, 3]])), "faces must be [F, 3] indices into vertices"),
    (dict(texture=np.zeros((2, 2, 3), np.uint8)), "a texture needs uvs"),
])
def test_error_messages_exactly(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as err:
        write_glb(tmp_path / "x.glb", **(dict(vertices=TRI_V, faces=TRI_F) | kwargs))
    assert str(err.value) == message
