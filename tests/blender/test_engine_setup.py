"""Set up engine's runner (blender_addon/engine_setup.py): steps, log, cancel, all-or-nothing, repair."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blender_addon import client, engine_env, engine_setup  # noqa: E402
from blender_addon.engine_env import Step  # noqa: E402

PY = sys.executable


def make_env_step(env_dir: Path, marker: str) -> Step:
    """A stand-in for `uv venv`: writes <partial>/bin/python (a copy of nothing) and a marker file."""
    partial = engine_setup.partial_dir(env_dir)
    code = (f"import pathlib; p = pathlib.Path({str(partial)!r}); (p / 'bin').mkdir(parents=True); "
            f"(p / 'bin' / 'python').write_text(''); (p / 'marker').write_text({marker!r}); print('made', p)")
    return Step("Make the environment", (PY, "-c", code))


def test_steps_run_in_order_and_the_result_is_swapped_in_with_a_stamp(tmp_path):
    env_dir, log = tmp_path / "engine-env", tmp_path / "logs" / "setup.log"
    report = '{"device": "cpu", "warning": "w"}'
    job = engine_setup.SetupJob([make_env_step(env_dir, "first"),
                                 Step("Say done", (PY, "-c", f"print('all good'); print({report!r})"))],
                                env_dir=env_dir, log_path=log, stamp={"torch": "test"}).start().wait(60)
    assert job.done and job.error == "" and job.states == ["done", "done"] and job.factor == 1.0
    assert (env_dir / "marker").read_text() == "first" and not engine_setup.partial_dir(env_dir).exists()
    stamp = json.loads((env_dir / engine_env.STAMP).read_text())
    assert stamp["torch"] == "test" and stamp["steps"] == ["Make the environment", "Say done"]
    assert stamp["device"] == {"device": "cpu", "warning": "w"} == engine_setup.read_stamp(env_dir)["device"]
    assert engine_setup.ready_python(env_dir) == str(env_dir / "bin" / "python")
    assert client.default_engine_python(str(tmp_path)) == str(env_dir / "bin" / "python")
    text = log.read_text()
    assert "== [1/2] Make the environment" in text and "all good" in text and text.rstrip().endswith("s)")


def test_a_failed_step_is_named_with_the_log_tail_and_keeps_the_old_engine(tmp_path):
    env_dir, log = tmp_path / "engine-env", tmp_path / "setup.log"
    engine_setup.SetupJob([make_env_step(env_dir, "old")], env_dir=env_dir).start().wait(60)
    bad = engine_setup.SetupJob([
        make_env_step(env_dir, "new"),
        Step("Install torch", (PY, "-c", "import sys; print('resolving'); print('no torch for you'); sys.exit(3)")),
        Step("Never", (PY, "-c", f"open({str(tmp_path / 'never')!r}, 'w')")),
    ], env_dir=env_dir, log_path=log).start().wait(60)
    assert bad.error == "Install torch failed (exit 3): no torch for you" and not bad.offline
    assert bad.states == ["done", "failed", "pending"] and not (tmp_path / "never").exists()
    tail = engine_setup.log_tail(log, 4)
    assert tail[:2] == ["resolving", "no torch for you"] and tail[2].startswith("-> exit 3")
    assert tail[3].startswith("== Install torch failed (exit 3)")
    assert (env_dir / "marker").read_text() == "old"  # the working engine is still the configured one
    assert engine_setup.partial_dir(env_dir).exists()  # the half-made one waits for the next set-up to remove it


def test_a_second_setup_over_a_broken_env_repairs_it(tmp_path):
    env_dir = tmp_path / "engine-env"
    (env_dir / "bin").mkdir(parents=True)  # what a crash mid-way leaves: an environment without its stamp
    (env_dir / "bin" / "python").write_text("")
    assert engine_setup.ready_python(env_dir) == "" and client.default_engine_python(str(tmp_path)) == ""
    engine_setup.partial_dir(env_dir).mkdir()
    (engine_setup.partial_dir(env_dir) / "junk").write_text("from a cancelled run")
    job = engine_setup.SetupJob([make_env_step(env_dir, "repaired")], env_dir=env_dir).start().wait(60)
    assert job.error == "" and (env_dir / "marker").read_text() == "repaired"
    assert engine_setup.ready_python(env_dir) and not (env_dir / "junk").exists()


def test_cancel_kills_the_whole_process_group_and_configures_nothing(tmp_path):
    env_dir, pids = tmp_path / "engine-env", tmp_path / "pids"
    # Like uv starting a build backend: the step's own child must die with it.
    code = (f"import subprocess, sys, time, pathlib; c = subprocess.Popen([sys.executable, '-c', "
            f"'import time; time.sleep(120)']); pathlib.Path({str(pids)!r}).write_text(str(c.pid)); "
            f"print('waiting', flush=True); time.sleep(120)")
    job = engine_setup.SetupJob([make_env_step(env_dir, "x"), Step("Install torch", (PY, "-c", code)),
                                 Step("Never", (PY, "-c", "print(1)"))], env_dir=env_dir).start()
    t0 = time.monotonic()
    while not pids.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    job.cancel()
    job.wait(30)
    assert job.done and job.states == ["done", "cancelled", "pending"] and "cancelled" in job.error
    child = int(pids.read_text())

    def alive() -> bool:
        try:
            return Path(f"/proc/{child}/status").read_text().split("State:")[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    t0 = time.monotonic()
    while alive() and time.monotonic() - t0 < 10:  # SIGTERM is immediate; a loaded machine may lag
        time.sleep(0.1)
    assert not alive(), "the step's child process survived Cancel"
    assert engine_setup.ready_python(env_dir) == "" and not env_dir.exists()


def test_no_network_gives_one_clear_message(tmp_path):
    uv_like = ("import sys; print('error: Request failed after 3 retries'); "
               "print('  cause: Failed to fetch: https://download.pytorch.org/whl/cpu/torch/'); "
               "print('  cause: dns error'); sys.exit(2)")
    job = engine_setup.SetupJob([Step("Install torch", (PY, "-c", uv_like))]).start().wait(60)
    assert job.offline and job.error.startswith("Install torch: no network") and "by hand" in job.error


def test_make_job_plans_uv_into_the_user_folder(tmp_path):
    job = engine_setup.make_job("/blender/python3.13", tmp_path, "/ext", "cpu")
    assert [s.title for s in job.steps][0] == "Install uv"
    assert job.steps[0].argv[-3:] == ("--target", str(tmp_path / "tools"), "uv")
    assert job.steps[1].argv[-1] == str(tmp_path / "engine-env.partial")
    assert job.env_dir == tmp_path / "engine-env" and job.log_path == tmp_path / "setup.log"
    uv = engine_env.uv_in(tmp_path / "tools")
    uv.parent.mkdir(parents=True)
    uv.write_text("")
    assert [s.title for s in engine_setup.make_job("py", tmp_path, "/ext", "cpu").steps][0] != "Install uv"
    assert job.stamp["torch_kind"] == "cpu"
    env = engine_setup.child_env({"PYTHONHOME": "/blender/python", "VIRTUAL_ENV": "/x", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and "VIRTUAL_ENV" not in env and env["PATH"] == "/bin"


def test_setup_operator_offline_online_and_a_bad_torch_choice(run_bpy):
    out = run_bpy("""
        import bpy, bpy_harness as h
        h.enable()
        from bl_ext.gen3dface_dev.gen3dface.blender_addon import prefs
        offline = bpy.ops.gen3dface.setup_engine.poll()
        lines = prefs.manual_setup_lines()
        bpy.context.preferences.system.use_online_access = True
        p = prefs.get_prefs()
        p.torch_build, p.torch_custom = "CUSTOM", "no such folder"
        try:
            bpy.ops.gen3dface.setup_engine()
            refused = ""
        except RuntimeError as exc:
            refused = str(exc)
        h.emit(offline=offline, online=bpy.ops.gen3dface.setup_engine.poll(), lines=lines, refused=refused,
               job=prefs._setup_job is not None, cancel_poll=bpy.ops.gen3dface.cancel_setup.poll())
        h.disable()
    """)
    assert out["offline"] is False and out["online"] is True  # module mode starts without online access
    assert out["lines"][1].startswith("uv venv --python 3.11 ") and out["lines"][1].endswith("/gen3dface/engine-env")
    assert "no such folder" in out["refused"] and "expected one of auto" in out["refused"]
    assert out["job"] is False and out["cancel_poll"] is False  # nothing started
