"""FLAME file loading: restricted unpickler, validation, npz cache, embedding, discovery."""
from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest

from engine.errors import EXIT_MODEL_MISSING, ModelMissing
from engine.prior import _safe_pickle, flame
from tests.engine import flame_fixtures as ff


@pytest.fixture(scope="module")
def arrays():
    return ff.make_flame_arrays()


def _expect_missing(fn, path, *fragments):
    with pytest.raises(ModelMissing) as info:
        fn()
    exc = info.value
    assert exc.exit_code == EXIT_MODEL_MISSING == 3
    assert exc.message.startswith(f"{path}: "), exc.message
    assert "\n" not in exc.message
    for frag in fragments:
        assert frag in exc.message, exc.message
    return exc


def _assert_same_model(loaded, arrays):
    np.testing.assert_array_equal(loaded["v_template"], arrays["v_template"])
    np.testing.assert_array_equal(loaded["shapedirs"], arrays["shapedirs"])
    np.testing.assert_array_equal(loaded["posedirs"], arrays["posedirs"])
    np.testing.assert_array_equal(loaded["weights"], arrays["weights"])
    np.testing.assert_array_equal(loaded["J_regressor"], arrays["J_regressor"].toarray())
    np.testing.assert_array_equal(loaded["f"], arrays["f"].astype(np.int64))
    assert loaded["f"].dtype == np.int64
    assert loaded["kintree_table"][0].tolist() == [-1, 0, 1, 1, 1]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_pickle_loads(tmp_path, arrays, protocol):
    pkl = ff.write_flame_numpy(tmp_path / "flame2023.pkl", arrays, protocol=protocol)
    _assert_same_model(flame.read_flame(pkl, tmp_path / "cache"), arrays)


def test_numpy2_module_names_load(tmp_path, arrays):
    # A file written under numpy 2 names numpy._core.multiarray; GLOBAL text is newline-ended,
    # so the protocol-2 bytes can be renamed in place.
    data = pickle.dumps(arrays, protocol=2)
    assert b"numpy.core.multiarray\n_reconstruct" in data
    pkl = tmp_path / "flame2023.pkl"
    pkl.write_bytes(data.replace(b"numpy.core.multiarray\n", b"numpy._core.multiarray\n"))
    _assert_same_model(flame.read_flame(pkl, tmp_path / "cache"), arrays)


def test_chumpy_pickle_loads_without_chumpy(tmp_path, arrays):
    pkl = ff.write_flame_chumpy(tmp_path / "generic_model.pkl", arrays)
    data = pkl.read_bytes()
    assert b"chumpy.ch\nCh" in data and b"scipy.sparse.csc\ncsc_matrix" in data
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules  # fixture cleaned up
    _assert_same_model(flame.read_flame(pkl, tmp_path / "cache"), arrays)


def test_chumpy_stub_keeps_state(tmp_path, arrays):
    pkl = ff.write_flame_chumpy(tmp_path / "generic_model.pkl", arrays)
    with open(pkl, "rb") as fh:
        raw = _safe_pickle.safe_load(fh)
    stub = raw["shapedirs"]
    assert isinstance(stub, _safe_pickle.ChumpyStub) and stub.chumpy_name == "chumpy.ch.Ch"
    assert set(stub.state) >= {"x", "_dirty_vars"}
    assert isinstance(raw["J_regressor"], _safe_pickle.SparseStub)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    pkl = ff.write_flame_malicious(tmp_path / "generic_model.pkl", marker)
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "cache"), pkl, "refused: pickle calls os.system")
    assert not marker.exists()
    assert not list(tmp_path.rglob("*.npz"))  # nothing cached from a refused file
    # The fixture is genuinely hostile: an unrestricted unpickler does run the command.
    pickle.loads(pkl.read_bytes())
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("module,name", [
    ("__builtin__", "eval"), ("builtins", "exec"), ("subprocess", "Popen"), ("posix", "system"),
    ("builtins", "getattr"), ("numpy", "load"), ("numpy.matrixlib.defmatrix", "matrix"), ("os", "remove"),
])
def test_disallowed_globals(module, name):
    data = f"c{module}\n{name}\n(S'true'\ntR.".encode()  # protocol 0: call module.name('true')
    with pytest.raises(_safe_pickle.RefusedGlobal) as info:
        _safe_pickle.safe_load(io.BytesIO(data))
    assert name in str(info.value)


def test_allowed_helpers_refuse_misuse():
    # copyreg._reconstructor may only build our stubs; numpy _reconstruct only plain ndarrays.
    bad = b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR."
    with pytest.raises(pickle.UnpicklingError):
        _safe_pickle.safe_load(io.BytesIO(bad))
    with pytest.raises(pickle.UnpicklingError):
        _safe_pickle._reconstruct(np.matrix, (0,), "b")


def test_wrong_keys(tmp_path):
    pkl = ff.write_flame_wrong_keys(tmp_path / "generic_model.pkl")
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "missing shapedirs, posedirs")


def test_wrong_shapes(tmp_path):
    pkl = ff.write_flame_wrong_shapes(tmp_path / "generic_model.pkl")
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "weights has shape (", ", 4)")


@pytest.mark.parametrize("content,fragment", [
    (b"", "cannot read"), (b"\x80\x02}q\x00(U\x01a", "cannot read"), (b"not a pickle at all", "cannot read"),
    (pickle.dumps([1, 2, 3], protocol=2), "holds a list"),
])
def test_corrupt_files(tmp_path, content, fragment):
    pkl = tmp_path / "generic_model.pkl"
    pkl.write_bytes(content)
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, fragment)


def test_missing_file(tmp_path):
    pkl = tmp_path / "FLAME" / "generic_model.pkl"
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "not found", flame.FLAME_URL)


def test_bad_values(tmp_path, arrays):
    nan = dict(arrays, shapedirs=arrays["shapedirs"].copy())
    nan["shapedirs"][3, 1, 7] = np.nan
    pkl = ff.write_flame_numpy(tmp_path / "nan.pkl", nan)
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "shapedirs contains NaN")
    oob = dict(arrays, f=arrays["f"].astype(np.int64) + len(arrays["v_template"]))
    pkl = ff.write_flame_numpy(tmp_path / "oob.pkl", oob)
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "f indexes vertices outside")
    strs = dict(arrays, weights=np.array(["a"] * 3))
    pkl = ff.write_flame_numpy(tmp_path / "str.pkl", strs)
    _expect_missing(lambda: flame.read_flame(pkl, tmp_path / "c"), pkl, "weights has dtype")


def test_flattened_posedirs_accepted(tmp_path, arrays):
    flat = dict(arrays, posedirs=arrays["posedirs"].reshape(-1, 36))
    pkl = ff.write_flame_numpy(tmp_path / "flat.pkl", flat)
    np.testing.assert_array_equal(flame.read_flame(pkl, tmp_path / "c")["posedirs"], arrays["posedirs"])


def test_npz_cache_hit_and_reconvert(tmp_path, arrays, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    pkl = ff.write_flame_chumpy(tmp_path / "generic_model.pkl", arrays)
    calls = []
    real = flame._unpickle
    monkeypatch.setattr(flame, "_unpickle", lambda p: calls.append(p) or real(p))
    flame.read_flame(pkl)
    cached = list((tmp_path / "xdg" / "gen3dface" / "flame").glob("*.npz"))
    assert len(calls) == 1 and len(cached) == 1
    _assert_same_model(flame.read_flame(pkl), arrays)  # second load: from the npz
    assert len(calls) == 1
    changed = dict(arrays, v_template=arrays["v_template"] * 1.1)
    ff.write_flame_chumpy(pkl, changed)
    np.testing.assert_allclose(flame.read_flame(pkl)["v_template"], changed["v_template"])
    assert len(calls) == 2
    # A damaged cache file is ignored and rewritten, not trusted.
    newest = max((tmp_path / "xdg" / "gen3dface" / "flame").glob("*.npz"), key=lambda p: p.stat().st_mtime)
    newest.write_bytes(b"garbage")
    np.testing.assert_allclose(flame.read_flame(pkl)["v_template"], changed["v_template"])
    assert len(calls) == 3


def test_embedding_loads(tmp_path, arrays):
    path = ff.write_embedding(tmp_path / "mediapipe_landmark_embedding.npz", arrays)
    emb = flame.load_embedding(path, n_faces=len(arrays["f"]))
    assert emb.face_idx.shape == (105,) and emb.bary.shape == (105, 3) and emb.mp_ids.shape == (105,)
    assert emb.mp_ids.max() < 478 and emb.face_idx.dtype == np.int64


def _write_npz(path, **overrides):
    base = {"lmk_face_idx": np.arange(5), "lmk_b_coords": np.full((5, 3), 1 / 3), "landmark_indices": np.arange(5)}
    base.update(overrides)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


@pytest.mark.parametrize("overrides,fragment", [
    ({"lmk_b_coords": None}, "missing lmk_b_coords"),
    ({"landmark_indices": np.array([0, 1, 2, 3, 478])}, "landmark_indices outside"),
    ({"lmk_face_idx": np.array([0, 1, 2, 3, 10_000])}, "lmk_face_idx outside"),
    ({"lmk_b_coords": np.full((5, 3), 0.5)}, "not barycentric"),
    ({"lmk_b_coords": np.full((4, 3), 1 / 3)}, "disagree"),
    ({"landmark_indices": np.array(["a"] * 5, dtype=object)}, "cannot read"),
])
def test_bad_embedding(tmp_path, overrides, fragment):
    path = _write_npz(tmp_path / "mediapipe_landmark_embedding.npz", **overrides)
    _expect_missing(lambda: flame.load_embedding(path, n_faces=100), path, fragment)


def test_missing_embedding(tmp_path):
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    _expect_missing(lambda: flame.load_embedding(path), path, "not found")


def test_find_flame(tmp_path, arrays):
    root = tmp_path / "models"
    assert flame.find_flame(root) is None
    pkl2020 = ff.write_flame_numpy(root / "FLAME" / "generic_model.pkl", arrays)
    assert flame.find_flame(root) is None  # no embedding yet
    assert flame.flame_files(root) == (pkl2020, None)
    emb = ff.write_embedding(root / "FLAME" / "mediapipe_landmark_embedding.npz", arrays)
    assert flame.find_flame(root) == (pkl2020, emb)
    open_pkl = ff.write_flame_numpy(root / "FLAME" / "FLAME2023_Open" / "flame2023_Open.pkl", arrays)
    assert flame.find_flame(root) == (open_pkl, emb)  # the CC-BY-4.0 model is preferred


def test_load_flame_names_embedding_on_mismatch(tmp_path, arrays):
    pkl = ff.write_flame_numpy(tmp_path / "generic_model.pkl", arrays)
    path = _write_npz(tmp_path / "emb.npz", lmk_face_idx=np.full(5, len(arrays["f"])))
    _expect_missing(lambda: flame.load_flame(pkl, path, cache_root=tmp_path / "c"), path, "lmk_face_idx outside")


def test_engine_loads_flame_with_the_configured_dimensions(tmp_path, arrays, monkeypatch):
    """The run's model has ``flame_shape`` identity and ``flame_expr`` expression components,
    and each is the file's own: shape k moves the head by shapedirs[..., k], expression k by
    shapedirs[..., 300 + k] (numpy, mapped to the Blender world here)."""
    import torch

    from engine.context import RunContext
    from engine.prior import PriorConfig, load_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "models"
    ff.write_flame_numpy(root / "FLAME" / "generic_model.pkl", arrays)
    ff.write_embedding(root / "FLAME" / "mediapipe_landmark_embedding.npz", arrays)
    model = load_model(PriorConfig(model="flame", flame_shape=7, flame_expr=3), RunContext(models_dir=root))
    assert model.name == "flame" and (model.n_shape, model.n_expr) == (7, 3)
    shape, expr = torch.zeros(7), torch.zeros(3)
    shape[5], expr[1] = 1.5, -2.0
    moved = model.vertices(shape, expr) - model.vertices(torch.zeros(7), torch.zeros(3))
    sd = arrays["shapedirs"]
    delta = 1.5 * sd[:, :, 5] + -2.0 * sd[:, :, ff.N_SHAPE_FULL + 1]  # FLAME frame: Y up, face +Z
    expected = np.stack([delta[:, 0], -delta[:, 2], delta[:, 1]], 1)  # → Blender: Z up, face −Y
    np.testing.assert_allclose(moved.double().numpy(), expected, atol=2e-6)
    assert np.abs(expected).max() > 1e-4  # the components move the head, so the check has teeth
