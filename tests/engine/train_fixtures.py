"""A small synthetic training set, built once per session by the real ``dataset build``.

Four template identities × 9 views at 128 px (the face must stay big enough for mediapipe
in the input view), their prior fitted by the engine's own preprocess + prior stages.
"""
from __future__ import annotations

from pathlib import Path

import pytest

N_IDS = 4
N_VIEWS = 9
SIZE = 128


def make_renders(out: Path, n: int = N_IDS, views: int = N_VIEWS, size: int = SIZE, seed: int = 0) -> Path:
    from engine.dataset.synthetic import SyntheticConfig, make_set

    make_set(out, SyntheticConfig(n_identities=n, n_views=views, size=size, seed=seed))
    return out


def build_dataset(src: Path, out: Path, **kw):
    from engine.context import RunContext
    from engine.dataset.build import BuildConfig, build

    ctx = RunContext(models_dir=src / "no_models")  # never a user's FLAME: the template prior
    return build(src, out, BuildConfig(crop_size=128, prior_model="template", **kw), ctx), ctx


@pytest.fixture(scope="session")
def synth_renders(tmp_path_factory) -> Path:
    return make_renders(tmp_path_factory.mktemp("synth") / "renders")


@pytest.fixture(scope="session")
def tiny_dataset(synth_renders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "ds"
    manifest, _ = build_dataset(synth_renders, out)
    assert manifest["counts"]["items"] == N_IDS, manifest["skipped"]
    return out
