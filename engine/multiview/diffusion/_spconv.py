"""The one module that imports spconv (CUDA only); the CPU stand-in is ``sparse_conv.py``.

The spconv layers are built once per net and take the net's own Parameters, so there is
one set of weights (state dict keys and layout are the same: spconv 2.x ``[out, k, k, k, in]``).
"""
from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _spconv():
    try:
        import spconv.pytorch as sp  # noqa: PLC0415 - GPU-only dependency, isolated here
    except Exception as exc:  # ImportError, or a wheel built for another CUDA
        log.info("spconv not usable (%s): sparse conv runs on the gather+einsum path", exc)
        return None
    return sp


_chosen: set[str] = set()


def use_spconv(device: torch.device) -> bool:
    """spconv only for CUDA tensors and only if it imports; logged once per device type."""
    ok = device.type == "cuda" and _spconv() is not None
    if device.type not in _chosen:
        _chosen.add(device.type)
        log.info("mesh sparse conv on %s: %s", device.type, "spconv" if ok else "gather+einsum")
    return ok


def _build(net):
    sp = _spconv()
    from .sparse_conv import SparseConv3d, SubMConv3d

    blocks = []
    for name in ("conv0", "down0", "conv1", "down1", "conv2"):
        layers = []
        for j, module in enumerate(getattr(net, name)):
            if isinstance(module, SparseConv3d):
                o, k, i = module.weight.shape[0], module.weight.shape[1], module.weight.shape[-1]
                conv = sp.SparseConv3d(i, o, k, module.stride, padding=module.padding, bias=False, indice_key=f"{name}_{j}")
            elif isinstance(module, SubMConv3d):
                o, k, i = module.weight.shape[0], module.weight.shape[1], module.weight.shape[-1]
                conv = sp.SubMConv3d(i, o, k, bias=False, indice_key=f"subm_{name}")
            else:
                layers.append(module)
                continue
            conv.weight = module.weight  # share the Parameter: one set of weights
            layers.append(conv)
        blocks.append(sp.SparseSequential(*layers))
    return sp.SparseSequential(*blocks)


def forward(net, x) -> torch.Tensor:
    """Run ``net`` (a ``SparseConvNet``) on ``x`` (``SparseVoxels``) with spconv; dense output."""
    sp = _spconv()
    cached = getattr(net, "_spconv_net", None)
    if cached is None:
        cached = _build(net)
        object.__setattr__(net, "_spconv_net", cached)  # not a registered submodule: no duplicate keys
    tensor = sp.SparseConvTensor(x.feats, x.coords.int(), list(x.shape), x.batch_size)
    return cached(tensor).dense()
