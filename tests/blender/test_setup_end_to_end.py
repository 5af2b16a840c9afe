"""Enable the extension → Set up engine (uv, Python 3.11, torch, the engine) → Generate imports a head.

The one test that really builds the engine's environment: downloads the engine's
dependencies from PyPI (torch comes from the set-up's input, below), ~1 GB on disk. It runs
on the bpy 5.1+ leg (``scripts/test_blender.sh 5.2.3``, Python 3.13, where Blender's own
Python cannot hold the engine); pyproject's addopts deselect it elsewhere.

Input: ``GEN3DFACE_TEST_TORCH`` (a wheel folder or index URL, as the Torch build
preference takes it); default: a folder pip is configured with that holds the CPU wheel
(``/opt/wheels`` on these machines, which reach no PyTorch index), else Auto. uv's cache is
``.cache/uv`` in the checkout (``UV_CACHE_DIR`` overrides), so a second run downloads nothing.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blender_addon import engine_env  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.setup_e2e]


def torch_input() -> str:
    given = os.environ.get("GEN3DFACE_TEST_TORCH")
    if given:
        return given
    for folder in engine_env._pip_find_links():
        if engine_env.local_cpu_wheel(folder, "Linux" if sys.platform.startswith("linux") else sys.platform):
            return folder
    return ""


def test_set_up_engine_then_generate_on_the_bundled_portrait(run_bpy, portrait_path, tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", os.environ.get("UV_CACHE_DIR", str(ROOT / ".cache" / "uv")))
    torch = torch_input()
    out = run_bpy(f"""
        import json, os, subprocess, time, bpy, bpy_harness as h
        h.enable()
        from bl_ext.gen3dface_dev.gen3dface.blender_addon import engine_setup, prefs
        p = prefs.get_prefs()
        p.engine_python = ""  # what a new user has: nothing configured
        p.torch_build, p.torch_custom = ("CUSTOM", {torch!r}) if {torch!r} else ("AUTO", "")
        bpy.context.preferences.system.use_online_access = True
        assert bpy.app.online_access
        before = prefs.engine_python()

        def set_up():
            t0 = time.monotonic()
            bpy.ops.gen3dface.setup_engine()
            job = prefs._setup_job.wait(1500)
            prefs.setup_tick()  # the timer's last call (timers never fire in module mode)
            return job, time.monotonic() - t0

        job, seconds = set_up()
        env_dir = job.env_dir
        size = int(subprocess.run(["du", "-sb", str(env_dir)], capture_output=True, text=True).stdout.split()[0])
        first = dict(error=job.error, states=job.states, steps=[s.title for s in job.steps], seconds=seconds,
                     size=size, engine_python=prefs.engine_python(), device=prefs._device_info,
                     log=os.path.isfile(job.log_path), stamp=json.loads((env_dir / "gen3dface-engine.json").read_text()))
        # Break the environment (torch gone), then Set up engine again: it repairs it.
        import glob
        for path in glob.glob(str(env_dir / "lib" / "python3.11" / "site-packages" / "torch")):
            import shutil; shutil.rmtree(path)
        broken = subprocess.run([prefs.engine_python(), "-c", "import torch"], capture_output=True).returncode
        job, seconds = set_up()
        again = dict(error=job.error, seconds=seconds, steps=[s.title for s in job.steps])

        t0 = time.monotonic()
        bpy.ops.gen3dface.generate(photo={str(portrait_path)!r}, output_dir={str(tmp_path / "runs")!r},
                                   backend="projection", views=4, resolution=256)
        gen = time.monotonic() - t0
        coll = bpy.data.collections["astronaut"]
        cams = [o for o in coll.objects if o.type == "CAMERA"]
        meshes = [o for o in coll.objects if o.type == "MESH"]
        h.emit(before=before, first=first, broken=broken, again=again, generate=gen, error=bpy.context.scene.gen3dface.last_error,
               n_cams=len(cams), faces=sum(len(m.data.polygons) for m in meshes), version=bpy.app.version_string,
               user_dir=prefs.user_dir())
        h.disable()
    """, timeout=3600)
    first = out["first"]
    print(f"bpy {out['version']}: Set up engine {first['seconds']:.0f} s, environment {first['size'] / 2**20:.0f} MiB; "
          f"repair {out['again']['seconds']:.0f} s; generate {out['generate']:.0f} s; torch input {torch or 'auto'!r}")
    try:
        assert out["before"] != first["engine_python"]  # the add-on now runs the environment it made
        assert first["error"] == "", first
        assert first["states"] == ["done"] * len(first["steps"]) and first["steps"][0] == "Install uv"
        assert first["engine_python"].startswith(out["user_dir"]) and first["engine_python"].endswith("/bin/python")
        assert first["device"]["device"] == "cpu" and first["device"]["torch_build"] == "cpu"
        assert first["log"] and first["stamp"]["torch_kind"] == ("wheels" if torch else "cpu")
        assert out["broken"] != 0 and out["again"]["error"] == ""
        assert out["again"]["steps"][0] != "Install uv"  # uv stays in the user folder's tools/
        assert out["error"] == "" and out["n_cams"] == 5 and out["faces"] > 100  # 4 views + the input camera
    finally:
        shutil.rmtree(Path(out["user_dir"]), ignore_errors=True)  # ~1 GB
