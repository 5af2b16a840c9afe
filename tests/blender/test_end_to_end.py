"""Generate → imported head with the REAL engine on the bundled portrait (projection backend)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import bpy_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_generate_operator_imports_head_and_cameras(run_bpy, portrait_path, tmp_path):
    out = run_bpy(f"""
        import time, bpy, bpy_harness as h
        h.enable()
        before = h.scene_counts()
        t0 = time.monotonic()
        bpy.ops.gen3dface.generate(photo={str(portrait_path)!r}, output_dir={str(tmp_path / "runs")!r},
                                   backend="projection", views=4, resolution=256)
        seconds = time.monotonic() - t0
        scene = bpy.context.scene
        coll = bpy.data.collections["astronaut"]
        cams = sorted((o for o in coll.objects if o.type == "CAMERA" and not o.name.endswith("_input")),
                      key=lambda o: o.name)
        meshes = [o for o in coll.objects if o.type == "MESH"]
        hits = [h.alpha_hits(scene, c, meshes, c.data.background_images[0].image.filepath) for c in cams]
        h.emit(seconds=seconds, n_cams=len(cams), n_meshes=len(meshes), faces=sum(len(m.data.polygons) for m in meshes),
               materials=h.material_report(meshes), hits=hits, input=bpy.data.objects.get("astronaut_input") is not None,
               last_run=scene.gen3dface.last_run, error=scene.gen3dface.last_error)
        h.disable()
    """, timeout=900)
    assert out["error"] == ""
    assert out["n_cams"] == 4 and out["input"] and out["n_meshes"] >= 1 and out["faces"] > 100
    assert all(out["materials"]["base_color_linked"]) and set(out["materials"]["metallic"]) == {0.0}
    for inside, total in out["hits"]:
        assert total > 100 and inside / total >= 0.99, out["hits"]
    assert Path(out["last_run"], "result.json").is_file()
    print(f"generate → imported head: {out['seconds']:.1f} s")


def test_batch_two_photos_with_bpy_module(tmp_path, portrait_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(portrait_path).save(photos / "a.png")
    Image.open(portrait_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "b.jpg")
    Image.new("RGB", (200, 200), (120, 120, 120)).save(tmp_path / "wall.png")
    blend = tmp_path / "out.blend"
    cmd = [sys.executable, str(ROOT / "blender_addon" / "batch.py"), str(photos), "-o", str(tmp_path / "runs"),
           "--save", str(blend), "--backend", "projection", "--views", "2", "--resolution", "128"]
    env = bpy_env(tmp_path)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 done, 0 failed" in done.stdout
    assert blend.is_file()
    check = subprocess.run([sys.executable, "-c", (
        "import bpy, json; bpy.ops.wm.open_mainfile(filepath=%r); "
        "print(json.dumps({c.name: sorted(o.type for o in c.objects) for c in bpy.data.collections}))") % str(blend)],
        capture_output=True, text=True, timeout=120, env=env)
    colls = eval(check.stdout.strip().splitlines()[-1])
    assert set(colls) >= {"a", "b"}
    assert all(c.count("CAMERA") == 3 and "MESH" in c for c in (colls["a"], colls["b"]))
    # One bad photo makes the exit code non-zero, the others still import.
    cmd[2] = str(tmp_path / "wall.png")
    done = subprocess.run(cmd[:3] + [str(photos / "a.png")] + cmd[3:5] + cmd[7:], capture_output=True, text=True,
                          timeout=900, env=env, cwd=str(tmp_path))
    assert done.returncode == 1 and "1 done, 1 failed" in done.stdout, done.stdout[-2000:]
