"""gen3dface eval: constructed runs with known answers, FID on known Gaussians, backends' absence."""
import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import EXIT_BAD_INPUT, EXIT_MODEL_MISSING, BadInput, ModelMissing
from engine.eval import embedders, metrics
from engine.eval.command import EvalConfig, Models, evaluate, table
from tests.engine.cli_helpers import run_cli
from tests.engine.eval_fixtures import (astronaut, blank, grace_hopper, make_run, tiny_clip_folder,
                                        tiny_inception)

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def dlib():
    """The default models, loaded once for the module (as eval loads them once for all runs)."""
    return Models(EvalConfig())


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(1, 4I) in 3-D: |mu|² = 3, tr = 3 + 12 − 2·tr(2I) = 3 → 6 exactly.
    assert metrics.frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0)
    # Same covariance (not diagonal): only the means count.
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert metrics.frechet_distance(np.zeros(2), a, np.array([3.0, 4.0]), a) == pytest.approx(25.0)
    # Non-commuting covariances: tr((S1 S2)^½) checked against the definition via eigenvalues.
    b = np.array([[1.0, -0.3], [-0.3, 0.5]])
    ref = np.trace(a) + np.trace(b) - 2 * np.sqrt(np.linalg.eigvals(a @ b)).real.sum()
    assert metrics.frechet_distance(np.zeros(2), a, np.zeros(2), b) == pytest.approx(ref)


def test_fid_from_samples_approaches_the_analytic_value():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (40000, 3))
    y = rng.normal(1, 2, (40000, 3))
    assert metrics.fid(x, y) == pytest.approx(6.0, rel=0.03)
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_views_that_copy_the_input_have_i2o_distance_0(tmp_path, dlib):
    photo = astronaut()
    run = make_run(tmp_path / "copies", photo, [photo, photo, blank()], azimuths=[-30.0, 0.0, 90.0])
    report = evaluate([run], EvalConfig(), dlib)
    r = report["runs"][0]
    assert r["input_face"] and r["faces_found"] == 2 and r["views"] == 3
    assert r["i2o"]["mean"] == pytest.approx(0.0, abs=1e-6) and r["i2o"]["match_rate"] == 1.0
    assert r["o2o"] == {"n": 1, "mean": 0.0, "min": 0.0, "max": 0.0, "match_rate": 1.0}
    assert [v["face"] for v in r["by_view"]] == [True, True, False]  # the blank view is counted as faceless
    assert [b["azimuth"] for b in report["by_azimuth"]] == [-30.0, 0.0, 90.0]
    assert "copies" in table(report)


def test_two_different_people_are_above_the_threshold(tmp_path, dlib):
    run = make_run(tmp_path / "other", astronaut(), [grace_hopper()])
    r = evaluate([run], EvalConfig(), dlib)["runs"][0]
    assert r["i2o"]["mean"] > 0.6 and r["i2o"]["match_rate"] == 0.0


def test_ground_truth_ssim_psnr_reid_lpips(tmp_path, dlib):
    photo = astronaut()
    lpips = tmp_path / "lpips.pt"
    torch.jit.script(_L1()).save(str(lpips))
    truth = np.clip(photo.astype(int) + 2, 0, 255).astype(np.uint8)  # +2 grey levels: PSNR ≈ 42.1 dB
    run = make_run(tmp_path / "gt", photo, [photo, blank()], ground_truth=[truth, blank()])
    config = EvalConfig(lpips=lpips)
    gt = evaluate([run], config, Models(config, face=dlib.face))["runs"][0]["ground_truth"]
    mse = np.mean((truth.astype(float) - photo) ** 2)
    assert gt["n"] == 2 and gt["psnr"] == pytest.approx((10 * math.log10(255 ** 2 / mse)), abs=1e-3)
    assert 0.9 < gt["ssim"] < 1.0
    assert gt["reid"]["n"] == 1 and gt["reid"]["match_rate"] == 1.0 and gt["reid"]["mean_distance"] < 0.1
    assert gt["lpips"] == pytest.approx(np.abs(truth.astype(float) - photo).mean() / 127.5 / 2, abs=1e-4)


class _L1(torch.nn.Module):
    """A stand-in LPIPS with a known value: mean |x − y| over a batch of two images (in [−1, 1])."""

    def forward(self, x, y):
        return (x - y).abs().mean().reshape(1, 1, 1, 1)


@pytest.mark.slow
def test_clip_similarity_of_identical_images_is_1_and_fid_of_the_same_set_is_0(tmp_path, dlib):
    photo = astronaut()
    run = make_run(tmp_path / "run", photo, [photo, photo[::-1].copy(), photo[:, ::-1].copy()])
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, im in enumerate([photo, photo[::-1], photo[:, ::-1]]):
        Image.fromarray(np.ascontiguousarray(im)).save(ref / f"{i}.png")
    config = EvalConfig(clip=tiny_clip_folder(tmp_path / "clip"), inception=tiny_inception(tmp_path / "inc.pt"),
                        fid_reference=ref)
    report = evaluate([run], config, Models(config, face=dlib.face))
    sims = report["runs"][0]["clip_similarity"]
    assert -1.0 <= sims <= 1.0
    run2 = make_run(tmp_path / "same", photo, [photo, photo])
    config2 = EvalConfig(clip=config.clip)
    same = evaluate([run2], config2, Models(config2, face=dlib.face))["runs"][0]
    assert same["clip_similarity"] == pytest.approx(1.0)
    assert report["overall"]["fid"]["value"] == pytest.approx(0.0, abs=1e-3)
    assert report["overall"]["fid"]["reference_images"] == 3


def test_bad_and_incomplete_runs_are_reported_by_name(tmp_path, dlib):
    good = make_run(tmp_path / "good", astronaut(), [blank(64)])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "views").mkdir()
    broken = make_run(tmp_path / "broken", astronaut(), [blank(64)])
    (broken / "views" / "view_000.png").unlink()
    report = evaluate([good, tmp_path / "half", tmp_path / "missing", broken], EvalConfig(), dlib)
    errors = {e["run"]: e["error"] for e in report["errors"]}
    assert "no result.json" in errors[str(tmp_path / "half")]
    assert "not found" in errors[str(tmp_path / "missing")]
    assert "view_000.png is missing" in errors[str(broken)] and str(broken) in errors[str(broken)]
    assert [r["run"] for r in report["runs"]] == [str(good)]


@pytest.mark.slow
def test_cli_writes_json_plot_and_table(tmp_path):
    run = make_run(tmp_path / "r", astronaut(), [astronaut(), blank()])
    out = run_cli("eval", run, tmp_path / "nope", "-o", tmp_path / "ev")
    assert out.code == EXIT_BAD_INPUT and "Traceback" not in out.stderr
    assert f"{tmp_path / 'nope'}: run directory not found" in out.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["overall"]["faces_found"] == 1 and "overall" in out.stdout
    assert Image.open(tmp_path / "ev" / "identity_vs_azimuth.png").size == (720, 420)


@pytest.mark.parametrize("module,package,make", [
    ("dlib", "dlib-bin", lambda p: embedders.DlibFaces()),
    ("onnxruntime", "onnxruntime", lambda p: embedders.ArcFaceOnnx(p)),
    ("transformers", "transformers", lambda p: embedders.ClipEmbedder(p)),
])
def test_missing_package_names_what_to_install(monkeypatch, tmp_path, module, package, make):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail, as when not installed
    with pytest.raises(ModelMissing) as err:
        make(tmp_path)
    assert err.value.exit_code == EXIT_MODEL_MISSING and f"pip install {package}" in err.value.message


def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(ModelMissing) as err:
        embedders.InceptionFeatures(tmp_path / "pt_inception.pt")
    assert str(tmp_path / "pt_inception.pt") in err.value.message and "downloaded" in err.value.message
    with pytest.raises(BadInput) as err:
        Models(EvalConfig(inception=tmp_path / "x.pt"))
    assert "--fid-reference" in err.value.message
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(ModelMissing) as err:
        embedders.InceptionFeatures(tmp_path / "junk.pt")
    assert "TorchScript" in err.value.message


def test_arcface_backend_runs_an_onnx_model(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # torch's exporter needs it to write the tiny model
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 14 * 14, 512)).eval()
    model = tmp_path / "w600k_tiny.onnx"
    torch.onnx.export(net, torch.rand(1, 3, 112, 112), str(model), dynamo=False, input_names=["input.1"])
    assert ort.InferenceSession(str(model)).get_inputs()[0].shape == [1, 3, 112, 112]
    face = embedders.face_embedder("arcface", model)
    found = face.faces(astronaut())
    assert len(found) == 1 and found[0].vector.shape == (512,)
    assert np.linalg.norm(found[0].vector) == pytest.approx(1.0)
    assert face.distance(found[0].vector, face.faces(astronaut())[0].vector) == pytest.approx(0.0, abs=1e-6)
    assert face.faces(blank()) == []
    x0, y0, x1, y1 = found[0].box  # the astronaut's face is in the upper middle of the portrait
    assert 100 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 250


def test_azimuth_from_the_camera_centre_when_transforms_has_no_list(tmp_path):
    from engine.eval.runs import view_angles

    def frame(x, y, z):
        m = np.eye(4)
        m[:3, 3] = (x, y, z)
        return {"transform_matrix": m.tolist()}

    assert view_angles(frame(0, -2, 0), 0, {}, tmp_path) == pytest.approx((0.0, 0.0))  # in front (face → −Y)
    assert view_angles(frame(2, 0, 0), 0, {}, tmp_path) == pytest.approx((90.0, 0.0))
    assert view_angles(frame(0, 2, 2), 0, {}, tmp_path) == pytest.approx((180.0, 45.0))
    with pytest.raises(BadInput):
        view_angles({}, 3, {}, tmp_path / "transforms.json")
