"""Dense volume networks of SyncDreamer / Morphable Diffusion, same module names and shapes.

Attribute names (``init_conv``, ``out_conv0``, ``t_conv``, ``v_conv``, ``conv6_1`` …) are
the checkpoints' key names; do not rename them (weights/convert_*.py relies on them).
Every block adds a time (and view) embedding before its conv: Gen3D-Face §3.2, "we deploy
an encoder to project the camera angles and time embedding to the latent image space".
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, c)


class Image2DResBlockWithTV(nn.Module):
    """Residual 2D block conditioned on time ``t: [n, tdim, 1, 1]`` and view ``v: [n, vdim, 1, 1]``."""

    def __init__(self, dim: int, tdim: int, vdim: int):
        super().__init__()
        self.time_embed = nn.Conv2d(tdim, dim, 1, 1)
        self.view_embed = nn.Conv2d(vdim, dim, 1, 1)
        self.conv = nn.Sequential(
            _norm(dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, 1, 1),
            _norm(dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, 1, 1),
        )

    def forward(self, x, t, v):
        return x + self.conv(x + self.time_embed(t) + self.view_embed(v))


class NoisyTargetViewEncoder(nn.Module):
    """Noisy latent of one view → features to unproject: [n, 4, h, w] → [n, out, h, w]."""

    def __init__(self, time_dim: int, view_dim: int, run_dim: int = 16, output_dim: int = 16):
        super().__init__()
        self.init_conv = nn.Conv2d(4, run_dim, 3, 1, 1)
        self.out_conv0 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.out_conv1 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.out_conv2 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.final_out = nn.Sequential(_norm(run_dim), nn.SiLU(), nn.Conv2d(run_dim, output_dim, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x: [n, 4, h, w]; t: [n, tdim]; v: [n, vdim] → [n, out, h, w]."""
        t, v = t[:, :, None, None], v[:, :, None, None]
        x = self.init_conv(x)
        for block in (self.out_conv0, self.out_conv1, self.out_conv2):
            x = block(x, t, v)
        return self.final_out(x)


class SpatialTimeBlock(nn.Module):
    """GroupNorm → SiLU → Conv3d (stride 1 or 2), time added first."""

    def __init__(self, x_in_dim: int, t_in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.t_conv = nn.Conv3d(t_in_dim, x_in_dim, 1, 1)
        self.bn = _norm(x_in_dim)
        self.silu = nn.SiLU()
        self.conv = nn.Conv3d(x_in_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x, t):
        return self.conv(self.silu(self.bn(x + self.t_conv(t))))


class SpatialUpTimeBlock(nn.Module):
    """GroupNorm → SiLU → ConvTranspose3d ×2, time added first."""

    def __init__(self, x_in_dim: int, t_in_dim: int, out_dim: int):
        super().__init__()
        self.t_conv = nn.Conv3d(t_in_dim, x_in_dim, 1, 1)
        self.norm = _norm(x_in_dim)
        self.silu = nn.SiLU()
        self.conv = nn.ConvTranspose3d(x_in_dim, out_dim, 3, padding=1, output_padding=1, stride=2)

    def forward(self, x, t):
        return self.conv(self.silu(self.norm(x + self.t_conv(t))))


class SpatialTime3DNet(nn.Module):
    """SyncDreamer's dense volume U-Net: [b, in, V, V, V] → [b, dims[0], V, V, V]."""

    def __init__(self, time_dim: int = 256, input_dim: int = 128, dims=(64, 128, 256, 512)):
        super().__init__()
        d0, d1, d2, d3 = dims
        self.init_conv = nn.Conv3d(input_dim, d0, 3, 1, 1)
        self.conv0 = SpatialTimeBlock(d0, time_dim, d0, stride=1)
        self.conv1 = SpatialTimeBlock(d0, time_dim, d1, stride=2)
        self.conv2_0 = SpatialTimeBlock(d1, time_dim, d1, stride=1)
        self.conv2_1 = SpatialTimeBlock(d1, time_dim, d1, stride=1)
        self.conv3 = SpatialTimeBlock(d1, time_dim, d2, stride=2)
        self.conv4_0 = SpatialTimeBlock(d2, time_dim, d2, stride=1)
        self.conv4_1 = SpatialTimeBlock(d2, time_dim, d2, stride=1)
        self.conv5 = SpatialTimeBlock(d2, time_dim, d3, stride=2)
        self.conv6_0 = SpatialTimeBlock(d3, time_dim, d3, stride=1)
        self.conv6_1 = SpatialTimeBlock(d3, time_dim, d3, stride=1)
        self.conv7 = SpatialUpTimeBlock(d3, time_dim, d2)
        self.conv8 = SpatialUpTimeBlock(d2, time_dim, d1)
        self.conv9 = SpatialUpTimeBlock(d1, time_dim, d0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [b, in, V, V, V]; t: [b, tdim]."""
        t = t[:, :, None, None, None]
        conv0 = self.conv0(self.init_conv(x), t)
        conv2 = self.conv2_1(self.conv2_0(self.conv1(conv0, t), t), t)
        conv4 = self.conv4_1(self.conv4_0(self.conv3(conv2, t), t), t)
        x = self.conv6_1(self.conv6_0(self.conv5(conv4, t), t), t)
        x = conv4 + self.conv7(x, t)
        x = conv2 + self.conv8(x, t)
        return conv0 + self.conv9(x, t)


class FrustumTVBlock(nn.Module):
    """GroupNorm → SiLU → Conv3d with time and view embeddings added first."""

    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.bn = _norm(x_dim)
        self.silu = nn.SiLU()
        self.conv = nn.Conv3d(x_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x, t, v):
        return self.conv(self.silu(self.bn(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTVUpBlock(nn.Module):
    """GroupNorm → SiLU → ConvTranspose3d ×2 with time and view embeddings added first."""

    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int):
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.norm = _norm(x_dim)
        self.silu = nn.SiLU()
        self.conv = nn.ConvTranspose3d(x_dim, out_dim, 3, padding=1, output_padding=1, stride=2)

    def forward(self, x, t, v):
        return self.conv(self.silu(self.norm(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTV3DNet(nn.Module):
    """Per-view frustum U-Net: [n, in, D, r, r] → {r: [n, d0, D, r, r], r/2: …, r/4: …, r/8: …}.

    The dict is keyed by spatial width so the UNet picks the level matching its feature
    map (SyncDreamer: 32/16/8/4 at 256² images). D and r must be divisible by 8.
    """

    def __init__(self, in_dim: int, t_dim: int, v_dim: int, dims=(64, 128, 256, 512)):
        super().__init__()
        self.conv0 = nn.Conv3d(in_dim, dims[0], 3, 1, 1)
        self.conv1 = FrustumTVBlock(dims[0], t_dim, v_dim, dims[1], 2)
        self.conv2 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[1], 1)
        self.conv3 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[2], 2)
        self.conv4 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[2], 1)
        self.conv5 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[3], 2)
        self.conv6 = FrustumTVBlock(dims[3], t_dim, v_dim, dims[3], 1)
        self.up0 = FrustumTVUpBlock(dims[3], t_dim, v_dim, dims[2])
        self.up1 = FrustumTVUpBlock(dims[2], t_dim, v_dim, dims[1])
        self.up2 = FrustumTVUpBlock(dims[1], t_dim, v_dim, dims[0])

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        """x: [n, in, D, r, r]; t: [n, tdim]; v: [n, vdim]."""
        t, v = t[:, :, None, None, None], v[:, :, None, None, None]
        w = x.shape[-1]
        x0 = self.conv0(x)
        x1 = self.conv2(self.conv1(x0, t, v), t, v)
        x2 = self.conv4(self.conv3(x1, t, v), t, v)
        x3 = self.conv6(self.conv5(x2, t, v), t, v)
        x2 = self.up0(x3, t, v) + x2
        x1 = self.up1(x2, t, v) + x1
        x0 = self.up2(x1, t, v) + x0
        return {w: x0, w // 2: x1, w // 4: x2, w // 8: x3}


class MeshFeatureExtractor(nn.Module):
    """Per-vertex fusion of the views' features (Morphable's ``SMPLFeatureExtractor([16, 16])``).

    A 1×1 Conv1d per view, then the mean over views: [n_views, C, P] → [C, P]. The mean
    makes the mesh volume independent of the order of the views.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv0 = nn.Conv1d(channels, channels, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv0(feats).mean(0)
