"""The add-on inside Blender (bpy module, one subprocess per test) driving the real engine."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

PKG = "bl_ext.gen3dface_dev.gen3dface"


@pytest.fixture(scope="module")
def no_face_photo(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("noface") / "gray wall.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(path)
    return path


def test_addon_registers_without_torch(run_bpy):
    out = run_bpy(f"""
        import sys
        sys.modules["torch"] = None
        import bpy, bpy_harness as h
        h.enable()
        import importlib
        for name in ("client", "run_data", "engine_setup", "scene_io", "jobs", "operators", "panel", "prefs", "batch",
                     "bake"):
            importlib.import_module("{PKG}.blender_addon." + name)
        loaded = [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None]
        h.emit(loaded=loaded, ops=[hasattr(bpy.ops.gen3dface, n) for n in ("generate", "cancel", "setup_engine",
                                                                          "check_engine")],
               panel=hasattr(bpy.types, "VIEW3D_PT_gen3dface"), views=bpy.context.scene.gen3dface.views)
        h.disable()
        h.emit(loaded=loaded, ops=[], panel=hasattr(bpy.types, "VIEW3D_PT_gen3dface"), views=0)
    """)
    assert out["loaded"] == [] and out["panel"] is False  # last emit: after disable, the panel is gone


def test_panel_draw_idle_and_running(run_bpy, portrait_path):
    out = run_bpy(f"""
        import bpy, bpy_harness as h
        h.enable()
        from {PKG}.blender_addon import panel, jobs, prefs
        settings = bpy.context.scene.gen3dface
        settings.photo = {str(portrait_path)!r}
        settings.last_error = "something broke"
        idle, problems = [], []
        panel.draw_panel(h.RecordingLayout(idle, problems), bpy.context)
        s, name = jobs.make_settings(dict(photo=settings.photo, output_dir={str(portrait_path.parent)!r},
                                          backend="projection", views=4, resolution=128), "")
        jobs.start(bpy.context, prefs.engine_python(), s, name)
        running = []
        panel.draw_panel(h.RecordingLayout(running, problems), bpy.context)
        poll_gen = bpy.ops.gen3dface.generate.poll()
        jobs.cancel()
        jobs.current().proc.wait(timeout=30)
        while jobs.tick() is not None:
            pass
        h.emit(idle=idle, running=running, poll_gen=poll_gen, last_error=settings.last_error, problems=problems,
               version=bpy.app.version_string)
        h.disable()
    """)
    assert out["problems"] == [], (out["version"], out["problems"])  # every call valid in this Blender's UILayout
    idle_names = [c[0] for c in out["idle"]]
    props = [c[1][1] for c in out["idle"] if c[0] == "prop"]
    assert props == ["photo", "backend", "views", "resolution", "steps", "guidance", "seed", "recon", "output_dir"]
    assert "template_icon" in idle_names  # the photo preview
    assert ("operator", ["gen3dface.generate"], {"icon": "USER"}) in [tuple(c) for c in out["idle"]]
    assert "progress" not in idle_names
    assert ["label", [], {"text": "something broke", "icon": "ERROR"}] in out["idle"]
    progress = [c for c in out["running"] if c[0] == "progress"]
    assert progress and progress[0][2]["type"] == "BAR" and "text" in progress[0][2]
    assert ["operator", ["gen3dface.cancel"], {"icon": "CANCEL"}] in out["running"]
    assert out["poll_gen"] is False
    assert out["last_error"] == "Cancelled"


def test_operator_failure_raises_and_leaves_scene_unchanged(run_bpy, no_face_photo, tmp_path):
    out = run_bpy(f"""
        import bpy, bpy_harness as h
        h.enable()
        before = h.scene_counts()
        try:
            bpy.ops.gen3dface.generate(photo={str(no_face_photo)!r}, output_dir={str(tmp_path / "runs")!r},
                                       backend="projection")
            error = None
        except RuntimeError as exc:
            error = str(exc)
        h.emit(error=error, before=before, after=h.scene_counts(),
               last_error=bpy.context.scene.gen3dface.last_error)
        h.disable()
    """)
    assert out["error"] is not None and "no face found" in out["error"] and "gray wall.png" in out["error"]
    assert out["before"] == out["after"]
    assert "no face found" in out["last_error"]
    assert not list((tmp_path / "runs").glob("gray*"))


def test_ui_job_cancel_leaves_scene_unchanged(run_bpy, portrait_path, tmp_path):
    out = run_bpy(f"""
        import time, bpy, bpy_harness as h
        h.enable()
        from {PKG}.blender_addon import jobs, prefs
        before = h.scene_counts()
        s, name = jobs.make_settings(dict(photo={str(portrait_path)!r}, output_dir={str(tmp_path / "runs")!r},
                                          backend="projection", views=4, resolution=128), "")
        job = jobs.start(bpy.context, prefs.engine_python(), s, name)
        # bpy module mode: timers never fire, so drive the timer function by hand.
        while job.state.steps == 0 and job.proc.running:
            jobs.tick(); time.sleep(0.05)
        bpy.ops.gen3dface.cancel()
        t0 = time.monotonic()
        while jobs.tick() is not None:
            time.sleep(0.05)
        h.emit(seconds=time.monotonic() - t0, before=before, after=h.scene_counts(),
               last_error=bpy.context.scene.gen3dface.last_error, exit=job.proc.proc.returncode,
               cancel_poll=bpy.ops.gen3dface.cancel.poll(), stage=job.state.text)
        h.disable()
    """)
    # 130: the engine stopped at a step boundary and exited by itself (client.EXIT_GRACE allows its teardown).
    assert out["exit"] == 130 and out["last_error"] == "Cancelled", out
    assert out["before"] == out["after"] and out["seconds"] < 15
    print("cancelled during", out["stage"], "exit", out["exit"], f"after {out['seconds']:.1f} s")
    assert out["cancel_poll"] is False
    assert not list((tmp_path / "runs").glob("astronaut*"))


def test_preferences_draw_setup_progress_offline_commands_and_doctor(run_bpy):
    out = run_bpy(f"""
        import bpy, bpy_harness as h
        h.enable()
        from {PKG}.blender_addon import engine_setup, prefs
        real = prefs.get_prefs()
        view = type("PrefsView", (), {{}})()  # draw() only reads self.layout and the three settings
        view.bl_rna = real.bl_rna
        for key in ("engine_python", "models_dir", "torch_index"):
            setattr(view, key, getattr(real, key))
        calls, problems = [], []
        view.layout = h.RecordingLayout(calls, problems)
        job = engine_setup.SetupJob([("Create the virtual environment", ["true"]), ("Install torch", ["true"])])
        job.step, job.title, job.lines = 1, "Install torch", ["Collecting torch==2.13.0"]
        prefs._setup_job, prefs._doctor_text = job, ["python: 3.11", "torch: 2.13.0"]
        prefs.Gen3DFacePreferences.draw(view, bpy.context)
        prefs._setup_job, prefs._doctor_text = None, []
        h.emit(calls=calls, problems=problems, version=bpy.app.version_string)
        h.disable()
    """)
    assert out["problems"] == [], (out["version"], out["problems"])
    props = [c[1][1] for c in out["calls"] if c[0] == "prop"]
    assert props == ["engine_python", "models_dir", "torch_index"]
    ops = [c[1][0] for c in out["calls"] if c[0] == "operator"]
    assert ops == ["gen3dface.setup_engine", "gen3dface.check_engine"]
    progress = [c for c in out["calls"] if c[0] == "progress"]
    assert progress == [["progress", [], {"factor": "0.5", "type": "BAR", "text": "Install torch"}]]
    labels = [c[2].get("text", "") for c in out["calls"] if c[0] == "label"]
    assert "Collecting torch==2.13.0" in labels and "torch: 2.13.0" in labels
    assert any("pip install torch==2.13.0" in t for t in labels)  # online access is off in module mode
