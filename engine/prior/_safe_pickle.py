"""A restricted unpickler for user-supplied model pickles (FLAME ``*.pkl``).

A pickle can call any importable function while it loads, so a model file downloaded from
somewhere is code. FLAME files are nevertheless pickles (Python 2, protocol 2, arrays stored
as numpy arrays, chumpy ``Ch`` objects and a scipy sparse matrix), so we read them with an
unpickler that resolves only an allow-list of globals:

- numpy array / dtype / scalar reconstruction (numpy 1 ``numpy.core`` and numpy 2
  ``numpy._core`` names),
- scipy sparse csc/csr/coo matrices (and the ``*_array`` variants), rebuilt here from their
  pickled ``__dict__`` rather than by scipy, so old-scipy module paths also load,
- chumpy objects (chumpy does not import on Python 3.11 / numpy >= 1.24): every ``chumpy.*``
  class maps to :class:`ChumpyStub`, which keeps the pickled ``__dict__``; a plain
  ``chumpy.ch.Ch`` stores its value under ``x`` (``Ch.__getstate__`` pickles ``__dict__``
  minus ``_parents`` and ``_cache``),
- plain containers (``set``, ``frozenset``, ``OrderedDict``, ...) and the two helpers that
  Python-3-written protocol-2 pickles use (``copyreg._reconstructor``, ``_codecs.encode``),
  both wrapped so they only do what those pickles need.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
:class:`RefusedGlobal` before it is resolved, so it is never called.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import pickle
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (it would run code)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        # posix/nt are how os functions are pickled; name them as users know them.
        shown = "os" if module in ("posix", "nt") else module
        self.qualname = f"{shown}.{name}"
        super().__init__(f"refused: pickle calls {self.qualname}")


class UnsupportedObject(ValueError):
    """An allowed object that does not hold a plain array (e.g. a chumpy expression)."""


class ChumpyStub:
    """Stands in for any chumpy class; ``state`` is the pickled ``__dict__``."""

    chumpy_name = "chumpy.?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {self.chumpy_name}")
        self.state = state


class SparseStub:
    """Stands in for a scipy sparse matrix/array; ``state`` is the pickled ``__dict__``."""

    fmt = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for a {self.fmt} sparse matrix")
        self.state = state


_SPARSE_FORMATS = {
    f"{fmt}_{kind}": fmt for fmt in ("csc", "csr", "coo") for kind in ("matrix", "array")
}
_sparse_classes: dict[str, type] = {}
_chumpy_classes: dict[str, type] = {}


def _sparse_class(fmt: str) -> type:
    if fmt not in _sparse_classes:
        _sparse_classes[fmt] = type(f"Sparse_{fmt}", (SparseStub,), {"fmt": fmt})
    return _sparse_classes[fmt]


def _chumpy_class(qualname: str) -> type:
    if qualname not in _chumpy_classes:
        _chumpy_classes[qualname] = type("ChumpyStub", (ChumpyStub,), {"chumpy_name": qualname})
    return _chumpy_classes[qualname]


def _reconstruct(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct`` restricted to plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused: array subtype {subtype!r}")
    return _multiarray._reconstruct(subtype, shape, dtype)


def _copyreg_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for protocol 0/1 objects: only our stubs, no constructor call."""
    if base is not object or state is not None or not issubclass(cls, (ChumpyStub, SparseStub)):
        raise pickle.UnpicklingError(f"refused: copyreg._reconstructor({cls!r}, {base!r})")
    return object.__new__(cls)


def _codecs_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as Python 3 uses it to pickle bytes at protocol 2 (latin1 only)."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("refused: _codecs.encode with unexpected arguments")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves the allow-list only."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__, copy_reg) → Python 3, as pickle's fix_imports does.
        mod, nm = module, name
        if (mod, nm) in _compat_pickle.NAME_MAPPING:
            mod, nm = _compat_pickle.NAME_MAPPING[(mod, nm)]
        mod = _compat_pickle.IMPORT_MAPPING.get(mod, mod)
        if (mod, nm) in _ALLOWED:
            return _ALLOWED[(mod, nm)]
        if (mod == "scipy.sparse" or mod.startswith("scipy.sparse.")) and nm in _SPARSE_FORMATS:
            return _sparse_class(_SPARSE_FORMATS[nm])
        if (mod == "chumpy" or mod.startswith("chumpy.")) and nm.isidentifier():
            return _chumpy_class(f"{mod}.{nm}")
        raise RefusedGlobal(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused: persistent ids")


def safe_load(fileobj: BinaryIO) -> Any:
    """Unpickle ``fileobj`` (Python 2 or 3 pickle) with the allow-list; stubs stay stubs.

    Raises :class:`RefusedGlobal` for a disallowed global, ``pickle.UnpicklingError`` /
    ``EOFError`` / ``ValueError`` for a corrupt file.
    """
    # latin1: Python 2 str holding raw array bytes must map byte-for-byte (numpy expects it).
    return SafeUnpickler(fileobj, encoding="latin1").load()


def to_array(obj: Any, what: str = "value") -> np.ndarray:
    """A plain (non-object) numpy array from an unpickled value.

    ndarray → itself; ``chumpy.ch.Ch`` stub → its ``x``; sparse stub / scipy sparse → dense;
    numbers / nested lists → ``np.asarray``. Raises :class:`UnsupportedObject` otherwise.
    """
    if isinstance(obj, ChumpyStub):
        state = getattr(obj, "state", {})
        if obj.chumpy_name.rsplit(".", 1)[-1] != "Ch" or "x" not in state:
            raise UnsupportedObject(f"{what} is a chumpy expression ({obj.chumpy_name}), not a stored array")
        return to_array(state["x"], what)
    if isinstance(obj, SparseStub):
        return _sparse_to_dense(obj, what)
    if sp.issparse(obj):  # in-memory arrays handed to the validator directly
        return np.asarray(obj.toarray())
    if isinstance(obj, (dict, set, frozenset)) or obj is None:
        raise UnsupportedObject(f"{what} is a {type(obj).__name__}, not an array")
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as exc:
        raise UnsupportedObject(f"{what} is not an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise UnsupportedObject(f"{what} has dtype {arr.dtype}, expected numbers")
    return arr


def _sparse_to_dense(obj: SparseStub, what: str) -> np.ndarray:
    """Rebuild a sparse matrix from its pickled ``__dict__`` (old and new scipy names)."""
    st = getattr(obj, "state", {})
    shape = st.get("_shape", st.get("shape"))
    try:
        shape = tuple(int(s) for s in shape)
        if obj.fmt == "coo":
            if "coords" in st:  # scipy >= 1.13
                row, col = (to_array(c, what) for c in st["coords"])
            else:
                row, col = to_array(st["row"], what), to_array(st["col"], what)
            mat = sp.coo_matrix((to_array(st["data"], what), (row, col)), shape=shape)
        else:
            cls = sp.csc_matrix if obj.fmt == "csc" else sp.csr_matrix
            parts = (to_array(st[k], what) for k in ("data", "indices", "indptr"))
            mat = cls(tuple(parts), shape=shape)
        return np.asarray(mat.toarray())
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UnsupportedObject(f"{what}: unreadable {obj.fmt} sparse matrix ({exc})") from None
