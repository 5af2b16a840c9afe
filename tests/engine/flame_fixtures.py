"""Synthetic FLAME files for tests (real keys, shapes and dtypes; a small head-like mesh).

FLAME itself cannot ship with the tests (licence, size), so these writers build a
~340-vertex ellipsoid head in FLAME's native frame (Y up, face toward +Z, metres) with
the real layout: ``shapedirs`` [V,3,400] (300 shape + 100 expression), ``posedirs``
[V,3,36], ``J_regressor`` [5,V] scipy csc, ``weights`` [V,5], ``kintree_table`` [2,5] with
the root's parent stored as 2**32 − 1. The first components mean something, so fitting tests
can recover them: shape 0 = uniform scale, 1 = width, 2 = height, 3 = depth; expression 0 =
mouth region moves down, 1 = mouth corners widen.

Writers: ``write_flame_numpy`` (plain numpy/scipy pickle, as FLAME 2023 files),
``write_flame_chumpy`` (Python-2-style pickle of chumpy ``Ch`` objects and an old-scipy
csc matrix, as FLAME 2020 ``generic_model.pkl``, crafted without chumpy installed),
``write_flame_malicious``, ``write_flame_wrong_keys``, ``write_flame_wrong_shapes`` and
``write_embedding`` (``mediapipe_landmark_embedding.npz``).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

N_SHAPE_FULL, N_EXPR_FULL = 300, 100
EYE_L, EYE_R = np.array([0.03, 0.035, 0.075]), np.array([-0.03, 0.035, 0.075])


def _sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit UV sphere: vertices [V,3] (Y up) and outward CCW faces [F,3]."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # inner rings, top → bottom
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]])
    top, bottom, n_r = 0, len(verts) - 1, len(lat)
    idx = lambda r, c: 1 + r * n_lon + c % n_lon  # noqa: E731
    faces = [(top, idx(0, c + 1), idx(0, c)) for c in range(n_lon)]
    for r in range(n_r - 1):
        for c in range(n_lon):
            a, b, d, e = idx(r, c), idx(r, c + 1), idx(r + 1, c), idx(r + 1, c + 1)
            faces += [(a, b, e), (a, e, d)]
    faces += [(bottom, idx(n_r - 1, c), idx(n_r - 1, c + 1)) for c in range(n_lon)]
    f = np.array(faces)
    # Orient outward (the sign test is cheap and avoids getting the winding wrong by hand).
    tri = verts[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (normal * tri.mean(1)).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return verts, f


def _smooth_field(p: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    """A random low-frequency displacement field at points p [V,3] → [V,3]."""
    a = rng.normal(size=(3, 3))
    freq = rng.normal(size=(3, 3)) * 20
    phase = rng.uniform(0, 2 * np.pi, 3)
    return amp * (p @ a * 5 + np.sin(p @ freq + phase))


def make_flame_arrays(n_lat: int = 15, n_lon: int = 24, seed: int = 0) -> dict:
    """FLAME arrays (numpy, J_regressor as scipy csc) of a small synthetic head, seeded."""
    rng = np.random.default_rng(seed)
    unit, faces = _sphere(n_lat, n_lon)
    v = unit * np.array([0.075, 0.1, 0.09]) + np.array([0.0, 0.02, 0.0])
    n_v = len(v)
    rings = 1 + np.arange(n_lat - 1)[:, None] * n_lon + np.arange(n_lon)[None]  # [rings, lon]

    def ring_mean_row(r: int) -> np.ndarray:
        row = np.zeros(n_v)
        row[rings[r]] = 1 / n_lon
        return row

    def near_row(point: np.ndarray, k: int = 4) -> np.ndarray:
        row = np.zeros(n_v)
        row[np.argsort(((v - point) ** 2).sum(1))[:k]] = 1 / k
        return row

    jreg = np.stack([ring_mean_row(n_lat - 2), ring_mean_row(n_lat - 4), ring_mean_row(min(n_lat // 2 + 2, n_lat - 3)),
                     near_row(EYE_L), near_row(EYE_R)])
    joints = jreg @ v
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    w_jaw = sig((joints[2, 1] - v[:, 1]) / 0.01) * sig((v[:, 2] - 0.02) / 0.01)
    w_eye_l = np.exp(-((v - EYE_L) ** 2).sum(1) / 0.015**2)
    w_eye_r = np.exp(-((v - EYE_R) ** 2).sum(1) / 0.015**2)
    w_root = sig((joints[1, 1] - v[:, 1]) / 0.01)
    rest = np.clip(1 - w_jaw - w_eye_l - w_eye_r - w_root, 0, None)
    weights = np.stack([w_root, rest, w_jaw, w_eye_l, w_eye_r], 1) + 1e-6
    weights /= weights.sum(1, keepdims=True)

    shapedirs = np.zeros((n_v, 3, N_SHAPE_FULL + N_EXPR_FULL))
    c = v - v.mean(0)
    shapedirs[:, :, 0] = c * 0.05
    for axis in range(3):
        shapedirs[:, axis, 1 + axis] = c[:, axis] * 0.05
    for i in range(4, N_SHAPE_FULL):
        shapedirs[:, :, i] = _smooth_field(v, rng, 0.002 / (1 + i / 20))
    mouth = w_jaw[:, None]
    shapedirs[:, 1, N_SHAPE_FULL] = -0.01 * w_jaw
    shapedirs[:, 0, N_SHAPE_FULL + 1] = 0.01 * np.sign(v[:, 0]) * w_jaw
    for i in range(N_SHAPE_FULL + 2, N_SHAPE_FULL + N_EXPR_FULL):
        shapedirs[:, :, i] = _smooth_field(v, rng, 0.001) * mouth
    posedirs = np.stack([_smooth_field(v, rng, 0.001) for _ in range(36)], -1)  # [V, 3, 36]
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": v, "f": faces.astype(np.uint32), "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": sp.csc_matrix(jreg), "weights": weights, "kintree_table": kintree,
        "J": joints, "bs_style": "lbs", "bs_type": "lrotmin",
    }


def write_flame_numpy(path: Path, arrays: dict | None = None, protocol: int = 2) -> Path:
    """A FLAME pickle of plain numpy arrays and a (current scipy) csc matrix."""
    arrays = make_flame_arrays() if arrays is None else arrays
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    return path


# ----------------------------------------------------------- a Python-2 / chumpy-style pickle


class _FakeCh:
    """Pickles exactly like ``chumpy.ch.Ch``: NEWOBJ of chumpy.ch.Ch + BUILD of its __dict__."""

    def __init__(self, x: np.ndarray):
        # What Ch.__getstate__ returns for a plain Ch: __dict__ minus _parents and _cache.
        self.__dict__.update({"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                              "_make_dense": False, "_make_sparse": False, "x": x})


class _FakeOldCsc:
    """Pickles like an old scipy ``scipy.sparse.csc.csc_matrix`` (its __dict__ as state)."""

    def __init__(self, m: sp.csc_matrix):
        self.__dict__.update({"_shape": m.shape, "maxprint": 50, "format": "csc",
                              "indices": m.indices, "indptr": m.indptr, "data": m.data})


_FakeCh.__module__, _FakeCh.__qualname__, _FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"
_FakeOldCsc.__module__, _FakeOldCsc.__qualname__, _FakeOldCsc.__name__ = "scipy.sparse.csc", "csc_matrix", "csc_matrix"


@contextlib.contextmanager
def _fake_modules(classes: dict[str, type]):
    """Register classes under their (fake) module names while pickling; restore afterwards."""
    names: set[str] = set()
    for modname in {cls.__module__ for cls in classes.values()}:
        parts = modname.split(".")
        names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    try:
        for n in sorted(names):
            if n not in saved or n in {cls.__module__ for cls in classes.values()}:
                mod = types.ModuleType(n)
                sys.modules[n] = mod
        for name, cls in classes.items():
            setattr(sys.modules[cls.__module__], name, cls)
        yield
    finally:
        for n in names:
            if n in saved:
                sys.modules[n] = saved[n]
            else:
                sys.modules.pop(n, None)


class _Py2Pickler(pickle.Pickler):
    """Writes ndarrays as Python 2 did: ``_reconstruct`` + a state whose raw data is a str."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            rec = np.ndarray.__reduce__(obj)  # (_reconstruct, (ndarray, (0,), b'b'), state)
            version, shape, dtype, fortran, raw = rec[2]
            raw = raw if isinstance(raw, list) else raw.decode("latin1")  # py2 str, read via latin1
            return rec[0], (np.ndarray, (0,), "b"), (version, shape, dtype, fortran, raw)
        return NotImplemented


def write_flame_chumpy(path: Path, arrays: dict | None = None) -> Path:
    """A FLAME pickle laid out like FLAME 2020's: chumpy ``Ch`` arrays, old-scipy csc."""
    arrays = make_flame_arrays() if arrays is None else dict(arrays)
    out = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
        if key in out:
            out[key] = _FakeCh(np.asarray(out[key]))
    out["J_regressor"] = _FakeOldCsc(sp.csc_matrix(arrays["J_regressor"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _fake_modules({"Ch": _FakeCh, "csc_matrix": _FakeOldCsc}), open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(out)
    return path


class _Pwn:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def write_flame_malicious(path: Path, marker: Path) -> Path:
    """A FLAME-looking pickle that runs ``echo pwned > marker`` via os.system if unpickled."""
    arrays = make_flame_arrays(n_lat=8, n_lon=8)
    arrays["bs_style"] = _Pwn(Path(marker))
    return write_flame_numpy(path, arrays)


def write_flame_wrong_keys(path: Path) -> Path:
    """A pickle of a dict without ``shapedirs`` and ``posedirs``."""
    arrays = make_flame_arrays(n_lat=8, n_lon=8)
    del arrays["shapedirs"], arrays["posedirs"]
    return write_flame_numpy(path, arrays)


def write_flame_wrong_shapes(path: Path) -> Path:
    """All keys present, but ``weights`` has 4 joints instead of 5."""
    arrays = make_flame_arrays(n_lat=8, n_lon=8)
    arrays["weights"] = arrays["weights"][:, :4]
    return write_flame_numpy(path, arrays)


def write_embedding(path: Path, arrays: dict | None = None, n: int = 105, seed: int = 0) -> Path:
    """A ``mediapipe_landmark_embedding.npz`` on front-facing triangles of ``arrays``' mesh."""
    arrays = make_flame_arrays() if arrays is None else arrays
    rng = np.random.default_rng(seed)
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    front = np.flatnonzero(v[f].mean(1)[:, 2] > 0.03)
    face_idx = rng.choice(front, size=n, replace=len(front) < n)
    bary = rng.dirichlet(np.ones(3), size=n)
    mp_ids = np.sort(rng.choice(478, size=n, replace=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, lmk_face_idx=face_idx.astype(np.int64), lmk_b_coords=bary, landmark_indices=mp_ids)
    return path
