"""The extension manifest passes Blender's own validator and builds an installable zip."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def blender_ext() -> Path:
    """``blender_ext.py`` as shipped inside the bpy wheel (the same code as ``blender --command extension``)."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the bpy module is not installed")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, "blender_ext.py not found in the bpy wheel"
    return found[-1]


def test_manifest_validates():
    done = subprocess.run([sys.executable, str(blender_ext()), "validate", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["id"] == "gen3dface" and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert "files" in manifest["permissions"]


def test_build_zip_has_addon_and_engine_but_no_tests(tmp_path):
    out = tmp_path / "gen3dface.zip"
    done = subprocess.run([sys.executable, str(blender_ext()), "build", "--source-dir", str(ROOT),
                           "--output-filepath", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    names = zipfile.ZipFile(out).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "blender_addon/__init__.py" in names and "blender_addon/client.py" in names
    assert "engine/protocol.py" in names and "pyproject.toml" in names  # Set up engine installs from here
    assert not [n for n in names if n.startswith(("tests/", "bench/", ".git", "docs/", ".venv")) or "__pycache__" in n]
    assert not [n for n in names if n.startswith("scripts/")]  # developer scripts (test_blender.sh) stay out
    # The built zip is itself a valid package.
    done = subprocess.run([sys.executable, str(blender_ext()), "validate", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
