"""The ``gen3dface`` CLI as a subprocess: usage, output-path errors, --json, doctor."""
import json

from engine.cli import build_parser
from tests.engine.cli_helpers import assert_one_line_error, run_cli
from tests.engine.test_rundir import read_only_parent


def test_usage_error_exits_2():
    result = run_cli("generate")
    assert result.code == 2 and "required" in result.stderr and "Traceback" not in result.stderr


def test_missing_photo(tmp_path):
    photo = tmp_path / "nope.jpg"
    result = run_cli("generate", photo, "-o", tmp_path / "run")
    assert_one_line_error(result, str(photo), "not found")
    assert not (tmp_path / "run").exists()


def test_output_path_is_a_file(tmp_path, portrait_path):
    target = tmp_path / "out.txt"
    target.write_text("I am a file")
    result = run_cli("generate", portrait_path, "-o", target)
    assert_one_line_error(result, str(target), "is a file")
    assert target.read_text() == "I am a file"


def test_read_only_output_directory(tmp_path, portrait_path):
    parent = read_only_parent(tmp_path)
    result = run_cli("generate", portrait_path, "-o", f"{parent}/run")
    assert_one_line_error(result, parent, "cannot write")


def test_json_mode_prints_only_events(tmp_path):
    result = run_cli("generate", tmp_path / "missing.png", "-o", tmp_path / "run", "--json")
    events = result.events  # raises if any stdout line is not JSON
    assert [e["type"] for e in events] == ["start", "error"]
    assert all(e["v"] == 1 for e in events)
    assert events[-1]["exit_code"] == 2 and "missing.png" in events[-1]["message"]


def test_doctor_reports_json():
    result = run_cli("doctor")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch"]["available"] and "cpu" in report["torch"]["devices"]
    assert report["mediapipe"]["ok"] and all(report["mediapipe"]["models"].values())
    assert report["backends"]["projection"] is True
    assert {"flame", "diffusion_weights"} <= set(report["model_files"])


def test_demo_has_a_default_output():
    args = build_parser().parse_args(["demo"])
    assert str(args.output) == "gen3dface-demo" and args.backend == "auto"


def test_blas_threads_limited_before_numpy_loads_unless_the_user_set_them():
    import os
    import subprocess
    import sys

    from engine import cli

    env = {}
    cli.limit_blas_threads(env)
    assert env == {"OPENBLAS_NUM_THREADS": "1"}
    env = {"OPENBLAS_NUM_THREADS": "2"}
    cli.limit_blas_threads(env)
    assert env == {"OPENBLAS_NUM_THREADS": "2"}
    # the console entry sets it while numpy is not loaded yet (the setting is read at load)
    probe = ("import os, sys, engine.cli as c\n"
             "c.main = lambda: print('numpy' in sys.modules, os.environ.get('OPENBLAS_NUM_THREADS')) or 0\n"
             "c.entry()\n")
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=clean, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["False", "1"], out
