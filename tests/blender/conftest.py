"""Fixtures for the Blender tests: run a script in a fresh bpy-module subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: The Python that runs the engine for these tests. Blender 5.1+ (bpy wheels for Python 3.13)
#: cannot hold the engine (Python 3.11 only), so scripts/test_blender.sh points this at a 3.11
#: environment with the engine; with bpy 4.2–5.0 the test venv is that environment.
ENGINE_PYTHON = os.environ.get("GEN3DFACE_TEST_ENGINE_PYTHON") or sys.executable


def bpy_env(tmp: Path) -> dict:
    """Environment for a bpy subprocess: Blender's user folders in ``tmp``, the tree importable."""
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = str(tmp / "blender_user")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "2")
    env["GEN3DFACE_TEST_ENGINE_PYTHON"] = ENGINE_PYTHON  # bpy_harness.enable's default
    env["GEN3DFACE_PYTHON"] = ENGINE_PYTHON  # batch.py's default engine Python
    return env


@pytest.fixture
def run_bpy(tmp_path):
    """``run_bpy(script, timeout=...)`` → the dict the script passed to ``bpy_harness.emit``
    (the last one; ``every=True``: the list of all of them, in order)."""
    def run(script: str, timeout: float = 300, expect_rc: int = 0, every: bool = False) -> dict | list[dict]:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                              timeout=timeout, cwd=str(tmp_path), env=bpy_env(tmp_path))
        lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        assert done.returncode == expect_rc and lines, (
            f"bpy script exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
        results = [json.loads(line[len("RESULT "):]) for line in lines]
        return results if every else results[-1]

    return run


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A small run directory in the engine's format (tests/blender/fake_run.py)."""
    from fake_run import make_run

    return make_run(tmp_path / "fake_run")
