"""``gen3dface generate --backend diffusion`` end to end with a tiny model folder the test writes.

The tiny model is random, so its views are noise shaped by the prior's silhouette; what is
tested is the wiring: model folder → joint DDIM → views + transforms.json → NeuS → mesh.
"""
import json

import pytest
import trimesh

from tests.engine.cli_helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


def test_diffusion_backend_through_recon(tmp_path, portrait_path, tiny_model_dir):
    out = tmp_path / "run"
    result = run_cli("generate", portrait_path, "-o", out, "--json", "--backend", "diffusion", "--weights",
                     tiny_model_dir, "--steps", "2", "--resolution", "128", "--recon-steps", "60", "--recon-resolution", "64",
                     "--texture-size", "256")
    assert result.code == 0, result.stderr[-3000:]
    stages = [e["name"] for e in result.events if e["type"] == "stage"]
    assert stages == ["preprocess", "prior", "diffusion", "recon"]
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["backend"] == "diffusion" and manifest["recon"] is True
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["backend"] == "diffusion" and len(meta["frames"]) >= 3
    mesh = trimesh.load(out / manifest["outputs"]["mesh"], force="mesh")
    assert len(mesh.faces) > 100


def test_diffusion_without_weights_is_exit_3(tmp_path, portrait_path):
    empty = tmp_path / "models"
    empty.mkdir()
    result = run_cli("generate", portrait_path, "-o", tmp_path / "run", "--backend", "diffusion",
                     "--models-dir", empty)
    assert_one_line_error(result, str(empty), "diffusion weights", code=3)
    assert not (tmp_path / "run").exists()


def test_auto_without_weights_falls_back_to_projection_with_a_warning(tmp_path):
    from engine.context import RunContext
    from engine.pipeline import GenerateConfig, _choose_backend

    ctx = RunContext(models_dir=tmp_path)
    assert _choose_backend(GenerateConfig(), ctx) == ("projection", None)
    assert ctx.warnings[0]["code"] == "no_diffusion_weights" and "docs/diffusion.md" in ctx.warnings[0]["message"]


def test_auto_with_weights_picks_diffusion(tmp_path, tiny_model_dir):
    from engine.context import RunContext
    from engine.multiview.diffusion import find_weights
    from engine.pipeline import GenerateConfig, _choose_backend

    models = tiny_model_dir.parent  # the folder is <models>/multiview
    assert find_weights(models) == tiny_model_dir
    ctx = RunContext(models_dir=models)
    assert _choose_backend(GenerateConfig(), ctx)[0] == "diffusion" and ctx.warnings == []


def test_auto_with_a_damaged_model_falls_back_with_a_warning(tmp_path, tiny_model_dir):
    import shutil

    from engine.context import RunContext
    from engine.pipeline import GenerateConfig, _choose_backend

    folder = tmp_path / "multiview"
    shutil.copytree(tiny_model_dir, folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])  # an interrupted download
    ctx = RunContext(models_dir=tmp_path)
    assert _choose_backend(GenerateConfig(), ctx) == ("projection", None)
    warning = ctx.warnings[0]
    assert warning["code"] == "bad_diffusion_weights" and "truncated" in warning["message"] and str(unet) in warning["message"]
