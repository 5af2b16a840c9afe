"""``generate`` with user FLAME files: a good one is used, bad ones exit 3 naming the file."""
import json
import os

import pytest

from tests.engine import flame_fixtures
from tests.engine.cli_helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


def _models(tmp_path, writer, **kwargs):
    flame_dir = tmp_path / "models" / "FLAME"
    flame_dir.mkdir(parents=True)
    writer(flame_dir / "generic_model.pkl", **kwargs)
    flame_fixtures.write_embedding(flame_dir / "mediapipe_landmark_embedding.npz")
    return tmp_path / "models", flame_dir / "generic_model.pkl"


def _generate(tmp_path, portrait_path, models):
    env_cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # the converted .npz goes here, not in ~/.cache
    return run_cli("generate", portrait_path, "-o", tmp_path / "run", "--backend", "projection", "--views", "4",
                   "--resolution", "128", "--models-dir", models, env={**os.environ, **env_cache})


def test_flame_is_used_when_installed(tmp_path, portrait_path):
    models, _ = _models(tmp_path, flame_fixtures.write_flame_chumpy)
    result = _generate(tmp_path, portrait_path, models)
    assert result.code == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "result.json").read_text())
    assert manifest["head_model"] == "flame"
    params = json.loads((tmp_path / "run" / "prior" / "params.json").read_text())
    # the fitted FLAME has the documented default dimensions (PriorConfig: 100 identity, 50 expression)
    assert params["model"] == "flame" and (len(params["shape"]), len(params["expr"])) == (100, 50)
    assert "flame_missing" not in {w["code"] for w in manifest["warnings"]}


@pytest.mark.parametrize("writer, reason", [(flame_fixtures.write_flame_wrong_keys, "missing"),
                                            (flame_fixtures.write_flame_wrong_shapes, "shape")])
def test_bad_flame_file_is_exit_3(tmp_path, portrait_path, writer, reason):
    models, pkl = _models(tmp_path, writer)
    result = _generate(tmp_path, portrait_path, models)
    assert_one_line_error(result, str(pkl), reason, code=3)
    assert not (tmp_path / "run").exists()


def test_malicious_flame_pickle_is_refused(tmp_path, portrait_path):
    marker = tmp_path / "pwned"
    models, pkl = _models(tmp_path, flame_fixtures.write_flame_malicious, marker=marker)
    result = _generate(tmp_path, portrait_path, models)
    assert_one_line_error(result, str(pkl), "refused", code=3)
    assert not marker.exists()
