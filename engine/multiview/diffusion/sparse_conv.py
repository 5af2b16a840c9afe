"""Sparse 3D convolution for the mesh volume (Morphable Diffusion's ``SparseConvNet``).

On CUDA with spconv installed the net runs through spconv (``_spconv.py``, the one module
that imports it). Everywhere else it runs on this gather + einsum implementation with
spconv 2.x semantics: weights ``[out, kD, kH, kW, in]``; ``SubMConv3d`` keeps the input's
active set; ``SparseConv3d`` (stride 2, padding 1) activates every output site whose
receptive field holds an active input. Both equal a dense ``conv3d`` over the zero-filled
grid, evaluated at the output active sites (tests/engine/test_diffusion_sparse.py).
spconv's own CPU path is not an option: its backward asserts CUDA and it returns wrong
rows with more than one thread (spconv#679, docs/architecture.md "Dependencies").
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass
class SparseVoxels:
    """Active voxels of a batch of grids.

    coords: [m, 4] int64 (batch, z, y, x); feats: [m, C]; shape: (D, H, W); batch_size: B.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    shape: tuple[int, int, int]
    batch_size: int = 1

    def replace(self, feats: torch.Tensor) -> "SparseVoxels":
        return SparseVoxels(self.coords, feats, self.shape, self.batch_size)

    def dense(self) -> torch.Tensor:
        """Zero-filled grid [B, C, D, H, W]."""
        d, h, w = self.shape
        out = self.feats.new_zeros(self.batch_size, self.feats.shape[1], d, h, w)
        b, z, y, x = self.coords.unbind(1)
        out[b, :, z, y, x] = self.feats
        return out


def _keys(coords: torch.Tensor, shape) -> torch.Tensor:
    d, h, w = shape
    return ((coords[:, 0] * d + coords[:, 1]) * h + coords[:, 2]) * w + coords[:, 3]


def _lookup(coords: torch.Tensor, shape, query: torch.Tensor) -> torch.Tensor:
    """Row of each query coordinate in ``coords`` (−1 where absent or out of bounds). query: [q, 4]."""
    keys = _keys(coords, shape)
    sorted_keys, order = keys.sort()
    inside = ((query[:, 1:] >= 0) & (query[:, 1:] < torch.tensor(shape, device=query.device))).all(1)
    qk = _keys(query.clamp(min=0), shape)
    pos = torch.searchsorted(sorted_keys, qk).clamp(max=max(len(keys) - 1, 0))
    found = inside & (sorted_keys[pos] == qk) if len(keys) else torch.zeros_like(inside)
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def _offsets(k: int, device) -> torch.Tensor:
    """Kernel offsets in weight order (kd, kh, kw row-major), [k³, 3]."""
    r = range(k)
    return torch.tensor(list(itertools.product(r, r, r)), device=device, dtype=torch.int64)


def _gather_conv(feats: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_k W[k] · feats[rows[k]]: rows [K, m_out] (−1 = none), weight [O, kD, kH, kW, I] → [m_out, O]."""
    o, i = weight.shape[0], weight.shape[-1]
    padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], 0)  # row −1 → zeros
    gathered = padded[rows]  # [K, m_out, I]
    w = weight.reshape(o, -1, i).permute(1, 2, 0)  # [K, I, O]
    return torch.einsum("kmi,kio->mo", gathered, w.to(feats.dtype))


def subm_conv3d(x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
    """Submanifold conv (stride 1, 'same' padding): output active set = input active set."""
    k = weight.shape[1]
    offs = _offsets(k, x.coords.device) - k // 2
    query = x.coords[None, :, :].repeat(len(offs), 1, 1)
    query[:, :, 1:] += offs[:, None]
    rows = _lookup(x.coords, x.shape, query.reshape(-1, 4)).reshape(len(offs), -1)
    return x.replace(_gather_conv(x.feats, rows, weight))


def sparse_conv3d(x: SparseVoxels, weight: torch.Tensor, stride: int = 2, padding: int = 1) -> SparseVoxels:
    """Regular sparse conv: out(o) = Σ_k W[k] · in(stride·o − padding + k) over active inputs."""
    k = weight.shape[1]
    shape_out = tuple((s + 2 * padding - k) // stride + 1 for s in x.shape)
    offs = _offsets(k, x.coords.device)
    # candidate outputs: every (input, offset) pair that lands on the output lattice
    num = x.coords[None, :, 1:] + padding - offs[:, None]  # [K, m, 3]
    ok = (num % stride == 0).all(-1)
    out_xyz = torch.div(num, stride, rounding_mode="floor")
    ok &= ((out_xyz >= 0) & (out_xyz < torch.tensor(shape_out, device=num.device))).all(-1)
    batch = x.coords[None, :, :1].expand(len(offs), -1, -1)
    cand = torch.cat([batch, out_xyz], -1)[ok]
    out_coords = torch.unique(cand, dim=0)
    query = out_coords[None].repeat(len(offs), 1, 1)
    query[:, :, 1:] = query[:, :, 1:] * stride - padding + offs[:, None]
    rows = _lookup(x.coords, x.shape, query.reshape(-1, 4)).reshape(len(offs), -1)
    return SparseVoxels(out_coords, _gather_conv(x.feats, rows, weight), shape_out, x.batch_size)


class SubMConv3d(nn.Module):
    """spconv-compatible submanifold conv module: ``weight: [out, k, k, k, in]``, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        nn.init.kaiming_uniform_(self.weight.view(out_channels, -1), a=5 ** 0.5)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        return subm_conv3d(x, self.weight)


class SparseConv3d(SubMConv3d):
    """spconv-compatible strided sparse conv module (stride 2, padding 1 as in Morphable)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__(in_channels, out_channels, kernel_size)
        self.stride, self.padding = stride, padding

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        return sparse_conv3d(x, self.weight, self.stride, self.padding)


class SparseSequential(nn.Sequential):
    """Convs act on the voxels; BatchNorm1d / ReLU act on their features (spconv semantics)."""

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        for module in self:
            x = module(x) if isinstance(module, SubMConv3d) else x.replace(module(x.feats))
        return x


def _stack(cin: int, cout: int, n: int, strided: bool = False) -> SparseSequential:
    layers: list[nn.Module] = []
    for j in range(n):
        conv = SparseConv3d(cin, cout) if strided else SubMConv3d(cin if j == 0 else cout, cout)
        layers += [conv, nn.BatchNorm1d(cout, eps=1e-3, momentum=0.01), nn.ReLU()]
    return SparseSequential(*layers)


class SparseConvNet(nn.Module):
    """Morphable Diffusion's mesh ConvNet: c0 → (↓2) c1 → (↓2) c2, dense output.

    Keys: conv0 (2 SubM), down0 (strided), conv1 (2 SubM), down1 (strided), conv2 (3 SubM);
    each conv followed by BatchNorm1d and ReLU. [m, c0] voxels on (D, H, W) → [B, c2, D/4, H/4, W/4].
    """

    def __init__(self, dims=(16, 32, 64)):
        super().__init__()
        c0, c1, c2 = dims
        self.conv0 = _stack(c0, c0, 2)
        self.down0 = _stack(c0, c1, 1, strided=True)
        self.conv1 = _stack(c1, c1, 2)
        self.down1 = _stack(c1, c2, 1, strided=True)
        self.conv2 = _stack(c2, c2, 3)

    def forward(self, x: SparseVoxels) -> torch.Tensor:
        from . import _spconv

        if _spconv.use_spconv(x.feats.device):
            return _spconv.forward(self, x)
        for block in (self.conv0, self.down0, self.conv1, self.down1, self.conv2):
            x = block(x)
        return x.dense()


def voxelize(vertices: torch.Tensor, feats: torch.Tensor, voxel_size: float, rule: str = "neuralbody"):
    """Vertices with features → one grid of voxels.

    vertices: [P, 3] world (x, y, z); feats: [P, C]. Rules:
    - ``morphable`` (Morphable Diffusion's ``facescape.py`` / ``generate_face.py``): origin at the
      vertices' minimum, index ``round((v − min) / voxel)``, grid ``(ceil((max − min) / voxel) | 3) + 1``;
    - ``neuralbody`` (our own models): origin 4 voxels below the minimum, ``floor``, grid rounded
      up to a multiple of 32.
    Vertices sharing a voxel are averaged (spconv leaves duplicates undefined).
    Returns (SparseVoxels, origin [3] world (x, y, z), shape (D, H, W)).
    """
    if rule == "morphable":
        lo, hi = vertices.min(0).values, vertices.max(0).values
        size_xyz = (torch.ceil((hi - lo) / voxel_size).long() | 3) + 1
        ijk = torch.round((vertices - lo) / voxel_size).long()
    elif rule == "neuralbody":
        lo = vertices.min(0).values - 4 * voxel_size
        hi = vertices.max(0).values + 4 * voxel_size
        size_xyz = (torch.ceil((hi - lo) / voxel_size).long() | 31) + 1
        ijk = torch.floor((vertices - lo) / voxel_size).long()
    else:
        raise ValueError(f"unknown voxelisation {rule!r}")
    zyx = ijk.flip(-1)
    shape = tuple(int(s) for s in size_xyz.flip(0))
    coords = torch.cat([torch.zeros_like(zyx[:, :1]), zyx], 1)
    uniq, inverse = torch.unique(coords, dim=0, return_inverse=True)
    summed = feats.new_zeros(len(uniq), feats.shape[1]).index_add_(0, inverse, feats)
    count = feats.new_zeros(len(uniq)).index_add_(0, inverse, torch.ones_like(feats[:, 0]))
    return SparseVoxels(uniq, summed / count[:, None], shape), lo, shape
