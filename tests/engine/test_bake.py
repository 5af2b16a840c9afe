"""``gen3dface bake``: a run's views baked onto a user's mesh (its own UVs), as a subprocess."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from recon.bake import texel_samples
from recon.cameras import orbit_camera, to_transforms
from recon.export import BLENDER_TO_YUP, write_glb, write_obj
from recon.texture import render_textured
from recon.uv import unwrap
from tests.engine.cli_helpers import assert_one_line_error, run_cli

S = 256


def _pattern(points):
    return 0.5 + 0.35 * np.stack([np.sin(30 * points[:, 0] + 2 * points[:, 2]), np.cos(25 * points[:, 1]),
                                  np.sin(28 * points[:, 2] + 1)], -1)


def _true_texture(v, f, uvs, size=S):
    s = texel_samples(v, f, uvs, f, size)
    tex = np.zeros((size * size, 3), np.float32)
    tex[s.pix.numpy()] = _pattern(s.points.numpy().astype(np.float64))
    return tex.reshape(size, size, 3)


@pytest.fixture(scope="module")
def head():
    """An asymmetric lumpy head-sized mesh with an xatlas layout (Blender world, Z up)."""
    s = trimesh.creation.icosphere(3)
    d = s.vertices
    bump = 1 + 0.12 * np.sin(3 * d[:, 0]) * np.cos(2 * d[:, 1]) + 0.08 * np.sin(4 * d[:, 2] + 1)
    v0 = d * 0.1 * bump[:, None] * np.array([0.85, 1.0, 1.1])
    vmap, f, uvs = unwrap(v0, s.faces, resolution=S, padding=3)
    return v0[vmap], f, uvs


@pytest.fixture(scope="module")
def run(tmp_path_factory, head):
    """A run directory: 16 views of the head rendered from its true texture + mesh/head.glb."""
    v, f, uvs = head
    tex = _true_texture(v, f, uvs)
    root = tmp_path_factory.mktemp("run")
    (root / "views").mkdir()
    cams, names = [], []
    for i in range(16):
        cam = orbit_camera(360.0 * i / 16, 35.0 * np.sin(4 * np.pi * i / 16), 0.6, 40, 128)
        colour, covered = render_textured(v, f, uvs, f, tex, cam)
        rgba = np.concatenate([colour, covered[..., None]], -1)
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8)).save(root / "views" / f"view_{i:03d}.png")
        cams.append(cam)
        names.append(f"views/view_{i:03d}.png")
    (root / "transforms.json").write_text(json.dumps(to_transforms(cams, names)))
    write_glb(root / "mesh" / "head.glb", v, f)
    return root


def _psnr(a, b, mask):
    return 10 * np.log10(1 / max(float(np.mean((a[mask] - b[mask]) ** 2)), 1e-12))


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255


@pytest.mark.slow
def test_bake_user_mesh_recovers_texture(tmp_path, run, head):
    v, f, uvs = head
    mesh = write_obj(tmp_path / "artist.obj", v, f, uvs)
    out = tmp_path / "baked"
    r = run_cli("bake", run, "--mesh", mesh, "-o", out, "--size", S, "--json")
    assert r.code == 0, r.stderr[-3000:]
    assert r.events[-1]["type"] == "result"
    info = json.loads((out / "bake.json").read_text())
    assert info["coverage"] > 0.95 and info["alignment"]["mode"] == "none"
    tex, cover = _read(out / "artist_basecolor.png"), np.asarray(Image.open(out / "artist_coverage.png")) > 0
    assert _psnr(tex, _true_texture(v, f, uvs), cover) >= 30
    back = trimesh.load(out / "artist.obj", force="mesh", process=False)
    np.testing.assert_allclose(back.vertices, v @ BLENDER_TO_YUP.T, atol=1e-9)
    assert "map_Kd artist_basecolor.png" in (out / "artist.mtl").read_text()


@pytest.mark.slow
def test_udim_tiles_give_one_image_each(tmp_path, run, head):
    v, f, uvs = head
    right = np.zeros(len(uvs), bool)
    right[f[v[f].mean(1)[:, 0] > 0].ravel()] = True
    # split vertices shared by both sides so every face lies in one tile
    v2, uv2 = np.vstack([v, v]), np.vstack([uvs, uvs + [1.0, 0.0]])
    side = v[f].mean(1)[:, 0] > 0
    f2 = np.where(side[:, None], f + len(v), f)
    used = np.unique(f2)
    remap = np.full(len(v2), -1)
    remap[used] = np.arange(len(used))
    v2, uv2, f2 = v2[used], uv2[used], remap[f2]
    mesh = write_obj(tmp_path / "udim.obj", v2, f2, uv2)
    out = tmp_path / "udim"
    r = run_cli("bake", run, "--mesh", mesh, "-o", out, "--size", S, "--bits", "16")
    assert r.code == 0, r.stderr[-3000:]
    info = json.loads((out / "bake.json").read_text())
    assert sorted(info["tiles"]) == ["1001", "1002"]
    for tile, faces in ((1001, f2[~side]), (1002, f2[side])):
        import cv2  # reads 16-bit colour PNGs (PIL does not)

        img = cv2.imread(str(out / f"udim_basecolor.{tile}.png"), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (S, S, 3)
        tex = img[..., ::-1].astype(np.float32) / 65535
        cover = np.asarray(Image.open(out / f"udim_coverage.{tile}.png")) > 0
        truth = _true_texture(v2, faces, uv2 - [tile - 1001, 0])
        assert cover.sum() > 1000 and _psnr(tex, truth, cover) >= 30


@pytest.mark.slow
def test_auto_alignment_recovers_a_similarity(tmp_path, run, head):
    v, f, uvs = head
    angle = np.radians(35)
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    moved = 1.7 * v @ rot.T + np.array([0.2, -0.1, 0.35])  # the artist's own frame and units
    mesh = write_obj(tmp_path / "moved.obj", moved, f, uvs)
    out = tmp_path / "aligned"
    r = run_cli("bake", run, "--mesh", mesh, "-o", out, "--size", S, "--align", "auto", "--json")
    assert r.code == 0, r.stderr[-3000:]
    info = json.loads((out / "bake.json").read_text())
    m = np.array(info["alignment"]["matrix"])
    back = moved @ m[:3, :3].T + m[:3, 3]
    assert np.abs(back - v).max() < 1e-3  # within 1 mm everywhere
    r_est = m[:3, :3] / info["alignment"]["scale"]
    cos = (np.trace(r_est @ rot) - 1) / 2  # r_est should be rot⁻¹
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 1.0
    assert info["alignment"]["residual_mm"] < 1.0 and info["coverage"] > 0.95
    # no face on these views (a patterned blob): the shape path, with the warning
    assert info["alignment"]["method"] == "shape" and "run's views" in info["alignment"]["fallback_reason"]
    assert [w["code"] for w in info["warnings"]] == ["align_no_landmarks"]
    assert any(e["type"] == "warning" and e["code"] == "align_no_landmarks" for e in r.events)


@pytest.mark.parametrize("case", ["no_uvs", "empty", "not_mesh", "no_views"])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, run, head, case):
    v, f, uvs = head
    run_dir, mesh = run, tmp_path / "m.obj"
    if case == "no_uvs":
        write_obj(mesh, v, f)
    elif case == "empty":
        mesh.write_text("# nothing here\n")
    elif case == "not_mesh":
        mesh = tmp_path / "photo.png"
        Image.new("RGB", (8, 8)).save(mesh)
    else:
        write_obj(mesh, v, f, uvs)
        run_dir = tmp_path / "empty_run"
        run_dir.mkdir()
    out = tmp_path / "out"
    r = run_cli("bake", run_dir, "--mesh", mesh, "-o", out)
    named = {"no_views": "transforms.json"}.get(case, mesh.name)
    assert_one_line_error(r, named)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
