"""``dataset build``: the format, resume, the manifest and the skip report (real preprocess + prior)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.engine.train_fixtures import N_IDS, N_VIEWS, build_dataset

pytestmark = pytest.mark.slow


def test_items_are_complete_and_estimated(tiny_dataset, synth_renders):
    from engine.dataset import format as fmt

    man = fmt.read_manifest(tiny_dataset)
    assert man["counts"] == {"items": N_IDS, "views": N_IDS * N_VIEWS, "skipped": 0}
    item = fmt.load_item(tiny_dataset, "synth_00000", verify=True)
    assert item.views.shape == (N_VIEWS, 128, 128, 4) and item.crop.shape == (128, 128, 4)
    src = json.loads((synth_renders / "synth_00000" / "transforms.json").read_text())
    true_input = np.asarray(src["frames"][item.input_view]["transform_matrix"])
    # the input view's camera is the prior's estimate, not the source camera (never ground truth)
    assert np.allclose(item.cameras[item.input_view].c2w, item.input_camera.c2w, atol=1e-6)
    assert not np.allclose(item.input_camera.c2w, true_input, atol=1e-3)
    # every camera moved by one similarity: the relative poses are the source's
    truth = [np.asarray(f["transform_matrix"]) for f in src["frames"]]
    rel_true = np.linalg.inv(truth[0][:3, :3]) @ truth[3][:3, :3]
    rel = np.linalg.inv(item.cameras[0].c2w[:3, :3]) @ item.cameras[3].c2w[:3, :3]
    assert np.allclose(rel, rel_true, atol=1e-6)
    # the frontal-most view was chosen as input (azimuth ±20° of the 9-view layout)
    assert item.input_view in (4, 5)
    # the fitted head sits where the estimated camera looks
    assert np.linalg.norm(item.vertices.mean(0)) < 0.05


def test_bad_items_are_skipped_and_reported(synth_renders, tmp_path):
    src = tmp_path / "src"
    for i, name in enumerate(["good", "missing_view", "broken_json", "mixed_sizes", "corrupt_png", "no_face"]):
        shutil.copytree(synth_renders / f"synth_{min(i, N_IDS - 1):05d}", src / name)
    (src / "missing_view" / "images" / "view_002.png").unlink()
    (src / "broken_json" / "transforms.json").write_text('{"frames": [')
    img = Image.open(src / "mixed_sizes" / "images" / "view_001.png")
    img.resize((64, 64)).save(src / "mixed_sizes" / "images" / "view_001.png")
    meta = json.loads((src / "mixed_sizes" / "transforms.json").read_text())
    meta["frames"][1].update(w=64, h=64, fl_x=meta["fl_x"] / 2, fl_y=meta["fl_y"] / 2, cx=32, cy=32)
    (src / "mixed_sizes" / "transforms.json").write_text(json.dumps(meta))
    png = src / "corrupt_png" / "images" / "view_003.png"
    png.write_bytes(png.read_bytes()[:200])
    for k in range(N_VIEWS):  # no face anywhere: a plain disc
        a = np.zeros((128, 128, 4), np.uint8)
        yy, xx = np.mgrid[:128, :128]
        a[(yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2] = (200, 150, 120, 255)
        Image.fromarray(a).save(src / "no_face" / "images" / f"view_{k:03d}.png")
    man, ctx = build_dataset(src, tmp_path / "ds")
    assert man["counts"]["items"] == 1 and list(man["items"]) == ["good"]
    reasons = {s["id"]: (s["file"], s["reason"]) for s in man["skipped"]}
    assert set(reasons) == {"missing_view", "broken_json", "mixed_sizes", "corrupt_png", "no_face"}
    assert reasons["missing_view"][0].endswith("view_002.png") and "not found" in reasons["missing_view"][1]
    assert "JSON" in reasons["broken_json"][1]
    assert "mixed sizes" in reasons["mixed_sizes"][1]
    assert reasons["corrupt_png"][0].endswith("view_003.png") and "image" in reasons["corrupt_png"][1]
    assert "face" in reasons["no_face"][1].lower()
    assert sum(w["code"] == "item_skipped" for w in ctx.warnings) == 5
    assert not list((tmp_path / "ds").glob(".*tmp*")) and not (tmp_path / "ds" / "no_face").exists()


def test_resume_keeps_finished_items(synth_renders, tmp_path):
    from engine.dataset import format as fmt

    src = tmp_path / "src"
    for i in range(2):
        shutil.copytree(synth_renders / f"synth_{i:05d}", src / f"synth_{i:05d}")
    man, _ = build_dataset(src, tmp_path / "ds", limit=1)  # "interrupted" after one item
    assert list(man["items"]) == ["synth_00000"]
    stamp = (tmp_path / "ds" / "synth_00000" / "item.json").stat().st_mtime_ns
    (tmp_path / "ds" / ".synth_00001.tmp-dead").mkdir()  # a killed run's half-written item
    man, _ = build_dataset(src, tmp_path / "ds")
    assert sorted(man["items"]) == ["synth_00000", "synth_00001"]
    assert (tmp_path / "ds" / "synth_00000" / "item.json").stat().st_mtime_ns == stamp
    assert not (tmp_path / "ds" / ".synth_00001.tmp-dead").exists()
    for k, entry in man["items"].items():
        assert entry["sha256"] == fmt.sha256_file(tmp_path / "ds" / k / "item.json")
        fmt.load_item(tmp_path / "ds", k, verify=True)


def test_build_from_a_coloured_mesh(tmp_path):
    """A PLY head with vertex colours (Y up, as mesh files are) → 8 rendered views → one item."""
    import trimesh

    from engine.dataset.synthetic import SyntheticConfig, make_identity

    head = make_identity(3, SyntheticConfig())
    v = head["vertices"] @ np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # Blender → Y up
    mesh = trimesh.Trimesh(v, head["faces"], vertex_colors=(head["colours"] * 255).astype(np.uint8), process=False)
    (tmp_path / "src").mkdir()
    mesh.export(tmp_path / "src" / "head.ply")
    (tmp_path / "src" / "broken.obj").write_text("v 0 0\nf 1 2 3\n")
    man, _ = build_dataset(tmp_path / "src", tmp_path / "ds", mesh_views=8, mesh_size=128)
    assert list(man["items"]) == ["head"] and [s["id"] for s in man["skipped"]] == ["broken"]
    from engine.dataset import format as fmt

    item = fmt.load_item(tmp_path / "ds", "head")
    assert item.views.shape == (8, 128, 128, 4) and (item.views[..., 3] > 0).mean() > 0.1
