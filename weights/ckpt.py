"""Read a PyTorch-Lightning ``.ckpt`` once, offline, with a restricted unpickler.

Only tensor-rebuilding functions, storages and plain containers are resolved; any other
class (Lightning callbacks, OmegaConf configs, argparse namespaces …) becomes an inert
stub, so loading a checkpoint never runs code from it. The engine never calls this at run
time: converters turn checkpoints into safetensors folders.
"""
from __future__ import annotations

import pickle
import types
from pathlib import Path

import torch

from .safeload import WeightsError

_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
}
_DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}


class Stub:
    """Stands in for any class the allow-list refuses; keeps its state for inspection."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED or (module == "torch" and (name.endswith("Storage") or name in _DTYPES)):
            return super().find_class(module, name)
        return type(name, (Stub,), {"__module__": "weights.ckpt.stubs"})


_restricted = types.SimpleNamespace(Unpickler=_Unpickler, load=pickle.load, __name__="weights.ckpt.restricted")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or a bare state dict), tensors only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, "file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", pickle_module=_restricted, weights_only=False)
    except Exception as exc:  # a corrupt zip / pickle: report, do not crash with a traceback
        raise WeightsError(path, f"cannot read checkpoint: {exc}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(path, "no state_dict in checkpoint")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
