"""The prior stage on the real portrait (real mediapipe landmarks), FLAME selection and bad FLAME files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from engine.context import RunContext
from engine.errors import ModelMissing
from engine.preprocess import PreprocessConfig
from engine.preprocess import run as preprocess
from engine.prior import HeadPrior, PriorConfig, run
from engine.prior.template import TemplateHead

from .flame_fixtures import write_embedding, write_flame_numpy, write_flame_wrong_keys


@pytest.fixture(scope="module")
def pre(portrait_path, tmp_path_factory):
    return preprocess(portrait_path, tmp_path_factory.mktemp("pre"), PreprocessConfig(), RunContext())


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one template build for the module, outside the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg_cache"))


def test_portrait_with_the_template(pre, tmp_path):
    ctx = RunContext(models_dir=tmp_path / "models")  # empty: no FLAME
    prior = run(pre, tmp_path, PriorConfig(), ctx)
    assert isinstance(prior, HeadPrior) and prior.model == "template"
    assert [w["code"] for w in ctx.warnings] == ["flame_missing"]
    assert str(tmp_path / "models") in ctx.warnings[0]["message"]
    assert prior.vertices.dtype == np.float32 and prior.vertices.shape[1] == 3
    params = json.loads((tmp_path / "prior" / "params.json").read_text())
    assert params["model"] == "template" and not params["diverged"]
    assert params["residual_px"] < 0.02 * pre.crop.shape[0]  # a few pixels on a 512 crop
    # a natural profile: no coefficient beyond the soft limit, no long pointed ("Pinocchio") nose
    shape = dict(zip(params["shape_names"], params["shape"]))
    assert max(abs(c) for c in params["shape"] + params["expr"]) < 2.6
    assert abs(shape["nose_length"]) < 1.5
    glb = trimesh.load(tmp_path / "prior" / "head.glb", force="mesh")
    assert len(glb.vertices) == len(prior.vertices)
    # the fitted head's landmarks land on the photo's landmarks through the input camera
    head = TemplateHead()
    with torch.no_grad():
        lm = head.all_landmarks(torch.as_tensor(prior.vertices)).numpy()
    uv, depth = prior.camera.project(lm[:468])
    assert (depth > 0).all()
    assert np.median(np.linalg.norm(uv - pre.landmarks_crop[:468, :2], axis=1)) < 0.01 * pre.crop.shape[0]
    cam = prior.camera
    assert (cam.w, cam.h) == pre.crop.shape[:2] and cam.cx == pre.cx
    assert cam.center[1] < -0.2  # the photo was taken from in front of the face (−Y side)
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == ["head.glb", "params.json"]


def test_flame_used_when_installed(pre, tmp_path):
    models = tmp_path / "models"
    write_flame_numpy(models / "FLAME" / "generic_model.pkl")
    write_embedding(models / "FLAME" / "mediapipe_landmark_embedding.npz")
    ctx = RunContext(models_dir=models)
    prior = run(pre, tmp_path, PriorConfig(model="flame", flame_shape=10, flame_expr=5), ctx)
    assert prior.model == "flame" and "flame_missing" not in [w["code"] for w in ctx.warnings]
    assert json.loads((tmp_path / "prior" / "params.json").read_text())["model"] == "flame"


def test_bad_flame_file_is_model_missing(pre, tmp_path):
    models = tmp_path / "models"
    write_flame_wrong_keys(models / "FLAME" / "generic_model.pkl")
    write_embedding(models / "FLAME" / "mediapipe_landmark_embedding.npz")
    with pytest.raises(ModelMissing) as err:
        run(pre, tmp_path, PriorConfig(), RunContext(models_dir=models))
    assert "generic_model.pkl" in str(err.value)
    assert not (tmp_path / "prior" / "head.glb").exists()


def test_flame_required_but_missing(pre, tmp_path):
    with pytest.raises(ModelMissing) as err:
        run(pre, tmp_path, PriorConfig(model="flame"), RunContext(models_dir=tmp_path / "none"))
    assert "FLAME" in str(err.value) and err.value.exit_code == 3


def test_config_checks():
    assert PriorConfig.from_dict({"model": "template", "iterations": 5}).iterations == 5
    with pytest.raises(ValueError, match="unknown"):
        PriorConfig.from_dict({"modle": "flame"})
    with pytest.raises(ValueError):
        PriorConfig(model="smpl")
