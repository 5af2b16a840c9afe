"""Own sparse convolution vs spconv semantics: a sparse conv is a dense conv3d over the
zero-filled grid, read at the output active sites (SubM: the input's sites)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.multiview.diffusion import _spconv
from engine.multiview.diffusion.sparse_conv import (
    SparseConvNet, SparseVoxels, sparse_conv3d, subm_conv3d, voxelize,
)


def _random_voxels(seed=0, shape=(9, 7, 11), m=60, c=5, batch=2):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        idx = torch.randperm(shape[0] * shape[1] * shape[2], generator=g)[:m]
        z, y, x = idx // (shape[1] * shape[2]), (idx // shape[2]) % shape[1], idx % shape[2]
        rows.append(torch.stack([torch.full_like(z, b), z, y, x], 1))
    coords = torch.cat(rows)
    return SparseVoxels(coords, torch.randn(len(coords), c, generator=g), shape, batch)


def _dense_weight(w):  # spconv [out, kD, kH, kW, in] → conv3d [out, in, kD, kH, kW]
    return w.permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_subm_equals_dense_at_active_sites(seed):
    x = _random_voxels(seed)
    w = torch.randn(4, 3, 3, 3, 5, generator=torch.Generator().manual_seed(seed + 10))
    out = subm_conv3d(x, w)
    ref = F.conv3d(x.dense(), _dense_weight(w), padding=1)
    b, z, y, xx = x.coords.unbind(1)
    torch.testing.assert_close(out.feats, ref[b, :, z, y, xx], atol=1e-5, rtol=1e-5)
    assert torch.equal(out.coords, x.coords)


@pytest.mark.parametrize("seed", [0, 1])
def test_strided_equals_dense_and_active_set_is_the_receptive_field(seed):
    x = _random_voxels(seed)
    w = torch.randn(6, 3, 3, 3, 5, generator=torch.Generator().manual_seed(seed + 20))
    out = sparse_conv3d(x, w, stride=2, padding=1)
    dense = x.dense()
    ref = F.conv3d(dense, _dense_weight(w), stride=2, padding=1)
    assert out.shape == tuple(ref.shape[2:])
    b, z, y, xx = out.coords.unbind(1)
    torch.testing.assert_close(out.feats, ref[b, :, z, y, xx], atol=1e-5, rtol=1e-5)
    occupied = (dense.abs().sum(1, keepdim=True) > 0).float()
    reach = F.conv3d(occupied, torch.ones(1, 1, 3, 3, 3), stride=2, padding=1)[:, 0] > 0
    assert reach.sum().item() == len(out.coords)
    assert reach[b, z, y, xx].all()


def test_net_matches_a_dense_reference_chain():
    """The whole SparseConvNet (eval BN) equals dense convs masked to the active sites."""
    torch.manual_seed(0)
    net = SparseConvNet((4, 8, 8)).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    x = _random_voxels(3, shape=(16, 16, 16), m=150, c=4, batch=1)
    out = net(x)

    def dense_stack(seq, h, mask, stride):
        for mod in seq:
            if hasattr(mod, "weight") and mod.weight.dim() == 5:
                h = F.conv3d(h, _dense_weight(mod.weight), stride=stride, padding=1)
                if stride == 2:
                    mask = F.conv3d(mask, torch.ones(1, 1, 3, 3, 3), stride=2, padding=1) > 0
                    mask = mask.float()
            else:  # BN / ReLU act per site; keep inactive sites at zero
                h = (F.batch_norm(h, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.0, mod.eps)
                     if isinstance(mod, torch.nn.BatchNorm1d) else mod(h))
            h = h * mask
        return h, mask

    h, mask = x.dense(), (x.dense().abs().sum(1, keepdim=True) > 0).float()
    for name, stride in (("conv0", 1), ("down0", 2), ("conv1", 1), ("down1", 2), ("conv2", 1)):
        h, mask = dense_stack(getattr(net, name), h, mask, stride)
    torch.testing.assert_close(out, h, atol=1e-4, rtol=1e-4)


def test_voxelize_averages_shared_voxels():
    verts = torch.tensor([[0.0, 0.0, 0.0], [0.001, 0.001, 0.001], [0.1, 0.05, -0.02]])
    feats = torch.tensor([[1.0], [3.0], [5.0]])
    vox, origin, shape = voxelize(verts, feats, voxel_size=0.01)
    assert len(vox.coords) == 2 and all(s % 32 == 0 for s in shape)
    assert sorted(vox.feats[:, 0].tolist()) == [2.0, 5.0]
    assert torch.all(origin < verts.min(0).values)


def test_cpu_never_picks_spconv():
    assert not _spconv.use_spconv(torch.device("cpu"))
