"""Importing a run directory into Blender (fake run in the engine's format; no engine)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_import_run_builds_collection_mesh_material_and_cameras(run_bpy, fake_run):
    out = run_bpy(f"""
        import time, bpy, bpy_harness as h
        h.enable()
        from bl_ext.gen3dface_dev.gen3dface.blender_addon import scene_io
        before = h.scene_counts()
        t0 = time.monotonic()
        imp = scene_io.import_run(bpy.context, {str(fake_run)!r}, "astro")
        seconds = time.monotonic() - t0
        scene = bpy.context.scene
        res = (scene.render.resolution_x, scene.render.resolution_y)
        hits = [h.alpha_hits(scene, cam, imp.head, cam.data.background_images[0].image.filepath)
                for cam in imp.cameras]
        cam = imp.input_camera
        h.emit(seconds=seconds, collection=imp.collection.name, parent=[c.name for c in scene.collection.children],
               n_cameras=len(imp.cameras), mesh_types=[o.type for o in imp.head],
               in_collection=sorted(o.name for o in imp.collection.objects) == sorted(
                   [o.name for o in imp.head] + [c.name for c in imp.cameras] + [cam.name]),
               materials=h.material_report(imp.head), hits=hits,
               bg=[(c.data.background_images[0].alpha, c.data.background_images[0].frame_method) for c in imp.cameras],
               input=dict(lens=cam.data.lens, sensor=cam.data.sensor_width, fit=cam.data.sensor_fit,
                          sx=cam.data.shift_x, sy=cam.data.shift_y, has_bg=len(cam.data.background_images)),
               scene_camera=scene.camera.name, res=res,
               before=before, after=h.scene_counts())
        h.disable()
    """)
    assert out["collection"] == "astro" and "astro" in out["parent"]
    assert out["n_cameras"] == 4 and out["in_collection"]
    assert "MESH" in out["mesh_types"]
    assert out["materials"]["base_color_linked"] == [True] and out["materials"]["metallic"] == [0.0]
    for inside, total in out["hits"]:
        assert total > 50 and inside / total >= 0.99, out["hits"]
    assert all(alpha == 1.0 and method == "FIT" for alpha, method in out["bg"])
    # Input camera: fl_x=300, w=128, cx=70, cy=55, h=112, fl_y=290 (fake_run.make_run).
    inp = out["input"]
    assert inp["fit"] == "HORIZONTAL" and inp["sensor"] == 36 and inp["has_bg"] == 1
    assert inp["lens"] == pytest.approx(300 * 36 / 128)
    assert inp["sx"] == pytest.approx((64 - 70) / 128) and inp["sy"] == pytest.approx((55 - 56) / 128 * 300 / 290)
    assert out["scene_camera"] == "astro_input" and out["res"] == [128, 112]
    print(f"import time {out['seconds']:.3f} s")


def test_import_failure_leaves_scene_unchanged(run_bpy, fake_run):
    (fake_run / "views" / "view_002.png").unlink()  # images missing are fine: cameras without background
    (fake_run / "mesh" / "head.glb").write_bytes(b"glTF not really")  # the importer fails on this
    out = run_bpy(f"""
        import bpy, bpy_harness as h
        h.enable()
        from bl_ext.gen3dface_dev.gen3dface.blender_addon import scene_io
        before = h.scene_counts()
        try:
            scene_io.import_run(bpy.context, {str(fake_run)!r}, "broken")
            error = ""
        except Exception as exc:
            error = str(exc)
        h.emit(error=error, before=before, after=h.scene_counts())
        h.disable()
    """)
    assert out["error"]
    assert out["before"] == out["after"]
