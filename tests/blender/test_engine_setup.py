"""Set up engine: the commands, the threaded runner, and the offline explanation."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blender_addon import engine_setup  # noqa: E402


def test_setup_commands_pin_torch_before_the_engine(tmp_path):
    steps = engine_setup.setup_commands("/usr/bin/python3.11", tmp_path / "venv", ROOT)
    titles = [t for t, _ in steps]
    assert titles == ["Create the virtual environment", "Upgrade pip", "Install torch", "Install the engine"]
    py = str(tmp_path / "venv" / "bin" / "python")
    assert steps[0][1] == ["/usr/bin/python3.11", "-m", "venv", str(tmp_path / "venv")]
    assert steps[2][1] == [py, "-m", "pip", "install", "torch==2.13.0", "--index-url", engine_setup.TORCH_CPU_INDEX]
    assert steps[3][1] == [py, "-m", "pip", "install", str(ROOT)]
    lines = engine_setup.shell_text(engine_setup.setup_commands("/opt/my python/bin/python", "/v", ROOT, ""))
    assert lines[0] == "'/opt/my python/bin/python' -m venv /v" and "--index-url" not in lines[2]


def _wait(job, timeout=60):
    t0 = time.monotonic()
    while not job.done and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    assert job.done


def test_setup_job_runs_steps_and_reports_the_failing_one(tmp_path):
    venv = tmp_path / "venv"
    ok = engine_setup.SetupJob([("Create the virtual environment",
                                 [sys.executable, "-m", "venv", "--without-pip", str(venv)])]).start()
    _wait(ok)
    assert ok.error == "" and ok.factor == 1.0 and engine_setup.venv_python(venv).exists()
    bad = engine_setup.SetupJob([
        ("Say hello", [sys.executable, "-c", "print('hello')"]),
        ("Install nothing", [sys.executable, "-c", "import sys; print('no such package'); sys.exit(3)"]),
        ("Never", [sys.executable, "-c", f"open({str(tmp_path / 'never')!r}, 'w')"]),
    ]).start()
    _wait(bad)
    assert bad.error == "Install nothing failed (exit 3): no such package"
    assert not (tmp_path / "never").exists()


def test_setup_operator_explains_offline_setup(run_bpy):
    out = run_bpy("""
        import bpy, bpy_harness as h
        h.enable()
        from bl_ext.gen3dface_dev.gen3dface.blender_addon import prefs
        h.emit(online=bpy.app.online_access, poll=bpy.ops.gen3dface.setup_engine.poll(),
               lines=prefs.manual_setup_lines(), check_poll=bpy.ops.gen3dface.check_engine.poll())
        h.disable()
    """)
    assert out["online"] is False and out["poll"] is False  # the bpy module runs without online access
    assert out["lines"][0].endswith("/gen3dface_dev/gen3dface/venv")
    assert "torch==2.13.0" in out["lines"][2] and out["check_poll"] is True
