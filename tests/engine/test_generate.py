"""``gen3dface generate`` end to end with the real engine subprocess (embedded default)."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine import protocol
from recon.cameras import from_frame
from tests.engine.cli_helpers import ROOT, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, portrait_path):
    out = tmp_path_factory.mktemp("generate") / "run"
    result = run_cli("generate", portrait_path, "-o", out, "--json", "--views", "8", "--resolution", "256",
                     "--backend", "projection")
    assert result.code == 0, result.stderr[-3000:]
    return out, result


def test_events_in_order(run):
    out, result = run
    types = [e["type"] for e in result.events]
    assert types[0] == "start" and types[-1] == "result"
    stages = [e["name"] for e in result.events if e["type"] == "stage"]
    assert stages == ["preprocess", "prior", "projection"]
    previews = [(e["stage"], e["path"].split("/")[-1]) for e in result.events if e["type"] == "preview"]
    assert previews == [("preprocess", "crop.png"), ("projection", "view_000.png")]
    final = protocol.Event.from_dict(result.events[-1])
    assert final.output_dir == str(out) and json.loads(open(final.manifest).read())["backend"] == "projection"
    assert all(open(path, "rb") for path in final.outputs.values() if not path.endswith("views"))


def test_manifest(run, portrait_path):
    out, _ = run
    manifest = json.loads((out / "result.json").read_text())
    import hashlib

    assert manifest["input"]["sha256"] == hashlib.sha256(portrait_path.read_bytes()).hexdigest()
    assert set(manifest["timings"]) == {"preprocess", "prior", "projection"}
    assert all(t > 0 for t in manifest["timings"].values())
    assert manifest["versions"]["torch"] and manifest["versions"]["mediapipe"] == "0.10.21"
    assert {w["code"] for w in manifest["warnings"]} >= {"flame_missing"}
    for rel in manifest["outputs"].values():
        assert (out / rel).exists(), rel


def test_views_and_cameras(run):
    out, _ = run
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 8
    for frame in meta["frames"]:
        image = np.asarray(Image.open(out / frame["file_path"]))
        assert image.shape == (256, 256, 4)
        assert 0.02 < (image[..., 3] > 127).mean() < 0.9
        camera = from_frame(meta, frame)
        assert abs(np.linalg.norm(camera.center) - 1.0) < 1e-6  # orbit radius, looking at the head
    input_camera = from_frame(meta, meta["input_frame"])
    assert input_camera.w == 256 and np.isfinite(input_camera.c2w).all()


def test_refuses_to_overwrite_a_complete_run(run, portrait_path):
    out, _ = run
    before = (out / "result.json").read_text()
    result = run_cli("generate", portrait_path, "-o", out)
    assert_one_line_error(result, str(out), "--overwrite")
    assert (out / "result.json").read_text() == before


def test_no_face_leaves_no_run_directory(tmp_path):
    photo = tmp_path / "flat.png"
    Image.fromarray(np.full((256, 256, 3), 120, np.uint8)).save(photo)
    result = run_cli("generate", photo, "-o", tmp_path / "run")
    assert_one_line_error(result, str(photo), "no face")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.png"]


@pytest.mark.parametrize("how", ["sigterm", "stdin"])
def test_cancel(tmp_path, portrait_path, how):
    """Cancel during the run: exit 130, an error event, no run directory and no temporary left."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "generate", str(portrait_path), "-o", str(out), "--json",
                             "--backend", "projection", "--views", "8", "--resolution", "256"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "stage" and events[-1]["name"] == "prior":
            if how == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                proc.stdin.write(protocol.Cancel().to_json() + "\n")
                proc.stdin.flush()
    code = proc.wait(timeout=120)
    assert code == 130, proc.stderr.read()[-2000:]
    assert events[-1]["type"] == "error" and events[-1]["exit_code"] == 130
    assert list(tmp_path.iterdir()) == []


def test_mesh_projects_into_every_view_alpha(run):
    """The exported head, projected through each transforms.json camera, lands in that view's
    alpha for ≥ 99 % of its visible vertices (one pixel of slack on the silhouette)."""
    import trimesh
    from scipy.ndimage import maximum_filter

    from recon.export import BLENDER_TO_YUP
    from recon.raster import visible_vertices

    out, _ = run
    mesh = trimesh.load(out / "mesh" / "head.glb", force="mesh", process=False)
    assert mesh.visual.material.metallicFactor == 0.0 and mesh.visual.uv is not None
    verts = mesh.vertices @ BLENDER_TO_YUP  # glTF (Y up) → Blender world
    meta = json.loads((out / "transforms.json").read_text())
    for frame in meta["frames"]:
        alpha = np.asarray(Image.open(out / frame["file_path"]))[..., 3]
        camera = from_frame(meta, frame)
        visible = visible_vertices(verts, mesh.faces, camera, eps=2e-3)
        uv, _ = camera.project(verts[visible])
        px = np.clip(np.floor(uv).astype(int), 0, alpha.shape[0] - 1)
        hits = maximum_filter(alpha, size=3)[px[:, 1], px[:, 0]] > 0
        assert visible.sum() > 500 and hits.mean() >= 0.99, (frame["file_path"], hits.mean())
