"""Camera geometry in torch for the volume networks (SyncDreamer §3.3, Gen3D-Face §3.2).

Cameras are ``recon.cameras.Camera`` (Blender world, OpenGL axes, continuous pixels);
here they become tensors: ``c2w: [n, 4, 4]`` and ``intr: [n, 4]`` = (fx, fy, cx, cy) plus
the image size. Volumes are indexed ``[z, y, x]`` so that ``grid_sample``'s (x, y, z) grid
order addresses world x, y, z directly.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from recon.cameras import Camera


def camera_tensors(cameras: list[Camera], device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(c2w [n, 4, 4], intr [n, 4] = fx, fy, cx, cy) for a list of cameras."""
    c2w = torch.tensor(np.stack([c.c2w for c in cameras]), device=device, dtype=dtype)
    intr = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cameras], device=device, dtype=dtype)
    return c2w, intr


def azimuth_elevation(cameras: list[Camera]) -> np.ndarray:
    """Azimuth and elevation of each camera centre, radians, [n, 2].

    Same convention as ``recon.cameras.orbit_camera``: azimuth 0 on −Y (the face), positive
    toward +X; elevation positive above the equator.
    """
    c = np.stack([cam.center for cam in cameras])
    az = np.arctan2(c[:, 0], -c[:, 1])
    el = np.arcsin(np.clip(c[:, 2] / np.maximum(np.linalg.norm(c, axis=1), 1e-9), -1, 1))
    return np.stack([az, el], 1)


def view_embedding(targets: list[Camera], reference: Camera, el_sign: float = 1.0, az_sign: float = 1.0) -> torch.Tensor:
    """Relative view embedding of each target to the input camera, [n, 4].

    (Δelevation, sin Δazimuth, cos Δazimuth, 0): SyncDreamer's ``get_viewpoint_embedding``
    (zero123 writes elevation negated: ``el_sign=-1`` reproduces it).
    """
    t = azimuth_elevation(targets)
    r = azimuth_elevation([reference])[0]
    d_el = el_sign * (t[:, 1] - r[1])
    d_az = az_sign * (t[:, 0] - r[0])
    emb = np.stack([d_el, np.sin(d_az), np.cos(d_az), np.zeros_like(d_az)], 1)
    return torch.tensor(emb, dtype=torch.float32)


def volume_points(size: int, length: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """World positions of the V³ volume vertices, [V, V, V, 3] indexed [z, y, x] → (x, y, z).

    Vertices at linspace(−length, length, V) per axis (SyncDreamer: 32 over ±0.5), so
    ``grid_sample(..., align_corners=True)`` at p / length lands on them exactly.
    """
    lin = torch.linspace(-length, length, size, device=device, dtype=dtype)
    z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
    return torch.stack([x, y, z], -1)


def project(points: torch.Tensor, c2w: torch.Tensor, intr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points into each camera.

    points: [n, P, 3] or [P, 3]; c2w: [n, 4, 4]; intr: [n, 4]. Returns (uv [n, P, 2] pixels, depth [n, P]).
    """
    if points.dim() == 2:
        points = points.unsqueeze(0).expand(c2w.shape[0], -1, -1)
    rot, eye = c2w[:, :3, :3], c2w[:, :3, 3]
    p = torch.einsum("npk,nkj->npj", points - eye[:, None], rot)  # camera coords, OpenGL axes
    depth = -p[..., 2]
    safe = torch.where(depth.abs() < 1e-6, torch.full_like(depth, 1e-6), depth)
    fx, fy, cx, cy = (intr[:, i, None] for i in range(4))
    u = cx + fx * p[..., 0] / safe
    v = cy - fy * p[..., 1] / safe
    return torch.stack([u, v], -1), depth


def sample_views(feats: torch.Tensor, uv: torch.Tensor, depth: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear features of each view at projected points; zero behind the camera or outside.

    feats: [n, C, h, w] (covering the whole ``width`` × ``height`` image); uv: [n, P, 2] pixels;
    depth: [n, P]. Returns [n, C, P].
    """
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)
    grid = torch.where((depth > 1e-4)[..., None], grid, torch.full_like(grid, -3.0))
    out = F.grid_sample(feats, grid[:, None].to(feats.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, :, 0]


def frustum_points(c2w, intr, width: int, height: int, res: int, depth_planes: int, half_length: float) -> torch.Tensor:
    """World positions of each view's frustum volume, [n, D, res, res, 3].

    Latent-pixel centres × ``depth_planes`` planes of constant depth between the camera's
    distance to the origin ± ``half_length`` (Morphable Diffusion uses the real distance).
    """
    dev, dt = c2w.device, c2w.dtype
    dist = c2w[:, :3, 3].norm(dim=-1)  # [n]
    steps = torch.linspace(0, 1, depth_planes, device=dev, dtype=dt)
    near = (dist - half_length).clamp(min=1e-3)
    depths = near[:, None] + steps[None] * (dist + half_length - near)[:, None]  # [n, D]
    j = (torch.arange(res, device=dev, dtype=dt) + 0.5) * (width / res)
    i = (torch.arange(res, device=dev, dtype=dt) + 0.5) * (height / res)
    vv, uu = torch.meshgrid(i, j, indexing="ij")  # [res, res]
    fx, fy, cx, cy = (intr[:, k, None, None] for k in range(4))
    dx, dy = (uu - cx) / fx, -(vv - cy) / fy  # [n, res, res]
    d_cam = torch.stack([dx, dy, -torch.ones_like(dx)], -1)  # [n, res, res, 3]
    p_cam = depths[:, :, None, None, None] * d_cam[:, None]  # [n, D, res, res, 3]
    world = torch.einsum("ndhwk,njk->ndhwj", p_cam, c2w[:, :3, :3]) + c2w[:, None, None, None, :3, 3]
    return world


def sample_volume(volume: torch.Tensor, points: torch.Tensor, length: float) -> torch.Tensor:
    """Trilinear volume features at world points.

    volume: [1 or n, C, V, V, V] (indexed z, y, x over ±length); points: [n, *S, 3] (S 3-d).
    Returns [n, C, *S].
    """
    n = points.shape[0]
    if volume.shape[0] != n:
        volume = volume.expand(n, -1, -1, -1, -1)
    grid = (points / length).to(volume.dtype)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def silhouette(vertices: np.ndarray, faces: np.ndarray, camera: Camera, dilate_px: int = 0) -> np.ndarray:
    """Mask of the mesh seen by ``camera``, [h, w] float32 in {0, 1}.

    Union of the projected triangles in front of the camera; no depth test is needed for a
    silhouette. ``dilate_px`` grows it (hair and ears stick out of a FLAME-like prior).
    """
    uv, depth = camera.project(np.asarray(vertices, dtype=np.float64))
    img = Image.new("L", (camera.w, camera.h), 0)
    draw = ImageDraw.Draw(img)
    front = depth[faces].min(axis=1) > 1e-4
    for tri in uv[faces[front]]:
        draw.polygon([tuple(p) for p in tri], fill=255)
    mask = np.asarray(img, dtype=np.float32) / 255.0
    if dilate_px > 0:
        t = torch.from_numpy(mask)[None, None]
        k = 2 * dilate_px + 1
        mask = F.max_pool2d(t, k, stride=1, padding=dilate_px)[0, 0].numpy()
    return mask


def fov_half_extent(camera: Camera) -> float:
    """Half the width the camera sees at the origin, metres (for sanity checks)."""
    return float(np.linalg.norm(camera.center) * camera.w / (2 * camera.fx)) if camera.fx > 0 else math.inf
