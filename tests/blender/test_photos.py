"""The panel's list of more photos of the person, passed to the engine after the main photo."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PKG = "bl_ext.gen3dface_dev.gen3dface"


def test_generate_args_put_extra_photos_after_the_main_one():
    from blender_addon import client

    s = client.GenerateSettings(photo="/a/front.jpg", output_dir="/runs/x", extra_photos=("/a/left.jpg", "/a/r.png"))
    args = client.generate_args(s)
    assert args[:4] == ["generate", "/a/front.jpg", "/a/left.jpg", "/a/r.png"] and args[4] == "-o"


def test_photo_list_add_remove_draw_and_settings(run_bpy, portrait_path, tmp_path):
    missing = tmp_path / "gone.jpg"
    out = run_bpy(f"""
        import bpy, bpy_harness as h
        h.enable()
        from {PKG}.blender_addon import panel, jobs, photos
        scene = bpy.context.scene
        scene.gen3dface.photo = {str(portrait_path)!r}
        bpy.ops.gen3dface.photo_add(filepath={str(portrait_path)!r})
        bpy.ops.gen3dface.photo_add(filepath={str(missing)!r})
        bpy.ops.gen3dface.photo_add()
        listed = photos.extra_photos(bpy.context)
        calls, problems = [], []
        panel.draw_panel(h.RecordingLayout(calls, problems), bpy.context)
        try:
            jobs.make_settings(dict(photo=scene.gen3dface.photo, extra_photos=listed), "")
            missing_error = ""
        except jobs.GenerateError as exc:
            missing_error = str(exc)
        bpy.ops.gen3dface.photo_remove(index=1)
        s, _ = jobs.make_settings(dict(photo=scene.gen3dface.photo, extra_photos=photos.extra_photos(bpy.context),
                                       output_dir={str(tmp_path)!r}), "")
        try:
            bpy.ops.gen3dface.photo_remove(index=7)
            bad_remove = "removed"
        except RuntimeError as exc:  # an operator's ERROR report raises in module mode
            bad_remove = str(exc)
        h.emit(listed=listed, calls=calls, problems=problems, missing_error=missing_error,
               extra=list(s.extra_photos), n=len(scene.gen3dface_photos), bad_remove=bad_remove)
        h.disable()
    """)
    assert out["problems"] == []
    assert out["listed"] == [str(portrait_path), str(missing)]  # the empty entry is left out
    assert "gone.jpg" in out["missing_error"] and "no such file" in out["missing_error"]
    assert out["extra"] == [str(portrait_path)] and out["n"] == 2
    ops = [c[1][0] for c in out["calls"] if c[0] == "operator"]
    assert ops.count("gen3dface.photo_remove") == 3 and "gen3dface.photo_add" in ops
    assert "no photo 7" in out["bad_remove"] and out["n"] == 2
