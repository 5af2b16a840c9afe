"""The bpy-free engine client against the real engine subprocess (``python -m engine``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from blender_addon import client  # noqa: E402
from tests.blender.conftest import ENGINE_PYTHON  # noqa: E402
from engine import protocol  # noqa: E402


def test_addon_and_protocol_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import engine.protocol, blender_addon, blender_addon.client, blender_addon.run_data, "
            "blender_addon.engine_setup, blender_addon.batch\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_generate_args_are_a_list_with_only_given_options():
    s = client.GenerateSettings(photo="/p/a b.jpg", output_dir="/o/run", backend="projection", views=8, seed=3,
                                models_dir="/m", overwrite=True)
    args = client.generate_args(s)
    assert args[:5] == ["generate", "/p/a b.jpg", "-o", "/o/run", "--json"]
    assert args[args.index("--views") + 1] == "8" and args[args.index("--seed") + 1] == "3"
    assert "--steps" not in args and "--guidance" not in args and "--weights" not in args
    assert args[args.index("--models-dir") + 1] == "/m" and args[-1] == "--overwrite"


def test_engine_env_puts_the_extension_first():
    env = client.engine_env({"PYTHONPATH": "/elsewhere", "PYTHONHOME": "/blender/python"})
    assert env["PYTHONPATH"].split(":")[:2] == [str(ROOT), "/elsewhere"]
    assert "PYTHONHOME" not in env


def test_progress_state_factor_and_text():
    st = client.ProgressState()
    assert st.apply(protocol.Stage(name="multiview", index=1, total=4)) == "stage 2/4: multiview"
    st.apply(protocol.Progress(stage="multiview", step=5, total=10))
    assert st.factor == pytest.approx((1 + 0.5) / 4)
    assert st.text == "multiview (2/4) 5/10"
    st.apply(protocol.Result(output_dir="/r", manifest="/r/result.json"))
    assert st.factor == 1.0


def test_outcome_message_without_error_event_uses_stderr():
    out = client.Outcome(exit_code=1, stderr_tail="Traceback\nKeyError: 'x'")
    assert out.message == "engine failed (internal engine error): KeyError: 'x'"
    assert client.Outcome(exit_code=130).cancelled


def test_unique_run_dir(tmp_path):
    assert client.unique_run_dir(tmp_path, "a") == tmp_path / "a"
    (tmp_path / "a").mkdir()
    assert client.unique_run_dir(tmp_path, "a") == tmp_path / "a_001"


def test_missing_photo_is_exit_2_naming_the_file(tmp_path):
    photo = tmp_path / "nope.jpg"
    out = client.run_generate(ENGINE_PYTHON, client.GenerateSettings(str(photo), str(tmp_path / "run")))
    assert out.exit_code == 2 and not out.ok
    assert str(photo) in out.message
    assert not (tmp_path / "run").exists()


def test_missing_engine_python_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        client.start_generate(str(tmp_path / "no-python"), client.GenerateSettings("x.png", str(tmp_path / "r")))
