"""``gen3dface recon`` and ``generate --recon on`` as subprocesses, with their bad inputs."""
import json

import pytest
import trimesh

from tests.engine.cli_helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def views_run(tmp_path_factory, portrait_path):
    """A small projection run whose views and cameras feed recon."""
    out = tmp_path_factory.mktemp("views") / "run"
    result = run_cli("generate", portrait_path, "-o", out, "--backend", "projection", "--views", "8",
                     "--resolution", "128")
    assert result.code == 0, result.stderr[-3000:]
    return out


def test_recon_command(tmp_path, views_run):
    out = tmp_path / "recon"
    result = run_cli("recon", views_run / "transforms.json", "-o", out, "--prior", views_run / "prior" / "head.glb",
                     "--steps", "40", "--resolution", "64", "--texture-size", "256", "--json")
    assert result.code == 0, result.stderr[-3000:]
    assert [e["type"] for e in result.events][-1] == "result"
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["command"] == "recon" and manifest["metrics"]["faces"] > 100
    mesh = trimesh.load(out / manifest["outputs"]["mesh"], force="mesh")
    assert mesh.visual.uv is not None and len(mesh.faces) > 100
    assert (out / manifest["outputs"]["mesh_obj"]).is_file()


def test_generate_with_recon_on(tmp_path, portrait_path):
    out = tmp_path / "run"
    result = run_cli("generate", portrait_path, "-o", out, "--backend", "projection", "--views", "6",
                     "--resolution", "128", "--recon", "on", "--recon-steps", "30", "--recon-resolution", "64",
                     "--texture-size", "256")
    assert result.code == 0, result.stderr[-3000:]
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["recon"] is True and list(manifest["timings"]) == ["preprocess", "prior", "projection", "recon"]
    assert manifest["outputs"]["mesh"] == "mesh/head.glb" and (out / "prior" / "head_textured.glb").is_file()


def _copy_views(src, dst, frames=None, mutate=None):
    meta = json.loads((src / "transforms.json").read_text())
    dst.mkdir()
    (dst / "views").symlink_to(src / "views")
    if frames is not None:
        meta["frames"] = meta["frames"][:frames]
    if mutate:
        mutate(meta)
    (dst / "transforms.json").write_text(json.dumps(meta))
    return dst / "transforms.json"


def test_too_few_views(tmp_path, views_run):
    path = _copy_views(views_run, tmp_path / "two", frames=2)
    result = run_cli("recon", path, "-o", tmp_path / "out")
    assert_one_line_error(result, str(path), "3")
    assert not (tmp_path / "out").exists()


def test_non_finite_matrix(tmp_path, views_run):
    def poison(meta):
        meta["frames"][1]["transform_matrix"][0][3] = float("nan")

    path = _copy_views(views_run, tmp_path / "nan", mutate=poison)
    result = run_cli("recon", path, "-o", tmp_path / "out")
    assert_one_line_error(result, str(path), "non-finite")


def test_missing_transforms_and_prior(tmp_path, views_run):
    result = run_cli("recon", tmp_path / "none.json", "-o", tmp_path / "out")
    assert_one_line_error(result, "none.json", "not found")
    result = run_cli("recon", views_run / "transforms.json", "-o", tmp_path / "out", "--prior", tmp_path / "no.glb")
    assert_one_line_error(result, "no.glb", "not found")
    assert not (tmp_path / "out").exists()
