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


#: What a user reaches: the operators behind the panel's and the preferences' buttons, and the panel.
REQUIRED_OPERATORS = {"gen3dface.generate", "gen3dface.cancel", "gen3dface.setup_engine", "gen3dface.check_engine",
                      "gen3dface.cancel_setup", "gen3dface.bake_selected"}


def test_addon_registers_without_torch(run_bpy):
    """Every Blender class the add-on's modules define is registered while it is enabled (and
    the required operators and the panel are among them), none after disabling; no torch."""
    before, enabled, disabled = run_bpy(f"""
        import sys
        sys.modules["torch"] = None
        import bpy, bpy_harness as h
        import importlib
        import inspect

        def classes():
            # the add-on's own bpy classes, found by walking its modules (not its register lists)
            found = []
            for name in ("props", "prefs", "operators", "panel", "preview", "jobs", "scene_io", "batch", "bake", "photos"):
                try:
                    mod = importlib.import_module("{PKG}.blender_addon." + name)
                except ModuleNotFoundError as exc:
                    if exc.name != "{PKG}.blender_addon." + name:
                        raise
                    continue
                for _, cls in inspect.getmembers(mod, inspect.isclass):
                    if cls.__module__ == mod.__name__ and issubclass(cls, bpy.types.bpy_struct):
                        found.append(cls)
            return found

        def state(loaded):
            ops = sorted(c.bl_idname for c in classes() if issubclass(c, bpy.types.Operator))
            registered = sorted(c.__name__ for c in classes() if c.is_registered)
            return dict(loaded=loaded, ops=ops, registered=registered,
                        all=sorted(c.__name__ for c in classes()),
                        callable_ops=sorted("gen3dface." + n for n in dir(bpy.ops.gen3dface)),
                        panel=hasattr(bpy.types, "VIEW3D_PT_gen3dface"))

        h.emit(callable_ops=sorted("gen3dface." + n for n in dir(bpy.ops.gen3dface)),
               panel=hasattr(bpy.types, "VIEW3D_PT_gen3dface"))  # before enabling: nothing there
        h.enable()
        for name in ("client", "run_data", "engine_setup", "scene_io", "jobs", "operators", "panel", "prefs", "batch",
                     "bake", "photos"):
            importlib.import_module("{PKG}.blender_addon." + name)
        loaded = [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None]
        h.emit(**state(loaded), views=bpy.context.scene.gen3dface.views)
        h.disable()
        h.emit(**state(loaded))
    """, every=True)
    assert before["callable_ops"] == [] and before["panel"] is False
    assert enabled["loaded"] == []  # no torch module was imported by the add-on
    assert REQUIRED_OPERATORS <= set(enabled["ops"]), enabled["ops"]
    assert "VIEW3D_PT_gen3dface" in enabled["all"] and enabled["panel"] is True
    assert enabled["registered"] == enabled["all"], sorted(set(enabled["all"]) - set(enabled["registered"]))
    assert set(enabled["ops"]) <= set(enabled["callable_ops"])  # bpy.ops reaches each of them
    assert enabled["views"] > 0
    assert disabled["registered"] == [] and disabled["panel"] is False
    assert not set(disabled["callable_ops"]) & REQUIRED_OPERATORS


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
        from {PKG}.blender_addon import engine_env, engine_setup, panel, prefs
        real = prefs.get_prefs()
        view = type("PrefsView", (), {{}})()  # draw() only reads self.layout and the settings
        view.bl_rna = real.bl_rna
        for key in ("engine_python", "models_dir", "torch_build", "torch_custom"):
            setattr(view, key, getattr(real, key))
        def draw(job, device):
            calls, problems = [], []
            view.layout = h.RecordingLayout(calls, problems)
            prefs._setup_job, prefs._doctor_text = job, ["python: 3.11", "torch: 2.13.0"]
            prefs.set_device_info(device)
            prefs.Gen3DFacePreferences.draw(view, bpy.context)
            panel_calls = []
            panel.draw_panel(h.RecordingLayout(panel_calls, problems), bpy.context)
            prefs._setup_job, prefs._doctor_text = None, []
            prefs.set_device_info(None)
            return dict(calls=calls, problems=problems, panel=panel_calls)
        job = engine_setup.SetupJob([engine_env.Step("Install uv", ("true",)), engine_env.Step("Install torch", ("true",)),
                                     engine_env.Step("Install the engine", ("true",))], log_path="/tmp/x/setup.log")
        job.states, job.step, job.title, job.lines = ["done", "running", "pending"], 1, "Install torch", ["Resolved 9"]
        running = draw(job, {{"device": "cpu", "warning": "NVIDIA GPU present (L4) but torch is a CPU build"}})
        job.states, job.done, job.error = ["done", "failed", "pending"], True, "Install torch failed (exit 2): boom"
        failed = draw(job, None)
        view.torch_build, view.torch_custom = "CUSTOM", "https://mirror.example/simple"
        custom = draw(None, None)
        h.emit(running=running, failed=failed, custom=custom, version=bpy.app.version_string)
        h.disable()
    """)
    labels = lambda calls: [(c[2].get("text", ""), c[2].get("icon", "")) for c in calls if c[0] == "label"]  # noqa: E731
    for case in ("running", "failed", "custom"):
        assert out[case]["problems"] == [], (out["version"], case, out[case]["problems"])
    run = out["running"]["calls"]
    assert [c[1][1] for c in run if c[0] == "prop"] == ["engine_python", "models_dir", "torch_build"]
    assert [c[1][0] for c in run if c[0] == "operator"] == [
        "gen3dface.setup_engine", "gen3dface.check_engine", "gen3dface.cancel_setup"]
    assert [c for c in run if c[0] == "progress"] == [
        ["progress", [], {"factor": "0.3333333333333333", "type": "BAR", "text": "Install torch"}]]
    shown = labels(run)
    assert shown[:3] == [("Install uv", "CHECKMARK"), ("Install torch", "PLAY"), ("Install the engine", "BLANK1")]
    assert ("Resolved 9", "") in shown and ("torch: 2.13.0", "") in shown and ("Log: /tmp/x/setup.log", "") in shown
    warning = ("NVIDIA GPU present (L4) but torch is a CPU build", "ERROR")
    assert warning in shown and warning in labels(out["running"]["panel"])  # the sidebar panel shows it too
    offline = [t for t, _ in shown if t.startswith("uv ")]  # online access is off in module mode
    assert offline[0].startswith("uv venv --python 3.11 ") and offline[0].endswith("/gen3dface/engine-env")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in offline[1]
    fail = out["failed"]["calls"]
    assert ("Install torch failed (exit 2): boom", "ERROR") in labels(fail) and ("Install torch", "ERROR") in labels(fail)
    assert "gen3dface.cancel_setup" not in [c[1][0] for c in fail if c[0] == "operator"]
    assert not [l for l in labels(out["failed"]["panel"]) if l[1] == "ERROR"]
    assert [c[1][1] for c in out["custom"]["calls"] if c[0] == "prop"][-2:] == ["torch_build", "torch_custom"]
    assert any("--index-url https://mirror.example/simple" in t for t, _ in labels(out["custom"]["calls"]))
