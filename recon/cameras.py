"""Pinhole cameras in the Blender world (docs/architecture.md, "Conventions").

A camera is camera-to-world ``c2w`` with OpenGL axes (+X right, +Y up, looking down −Z)
and intrinsics in pixels with continuous pixel coordinates (pixel (i, j) covers
[i, i+1) × [j, j+1), its centre at i + 0.5). Image rows grow downward (+v = −Y_cam).
This is the nerfstudio ``transforms.json`` convention; numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """One pinhole camera.

    c2w: camera-to-world, float64 [4, 4], OpenGL camera axes, Blender world (Z up).
    fx, fy, cx, cy: intrinsics in pixels; w, h: image size in pixels.
    """

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    w: int
    h: int

    @property
    def center(self) -> np.ndarray:
        """Camera position in the world, [3]."""
        return self.c2w[:3, 3]

    @property
    def w2c(self) -> np.ndarray:
        """World-to-camera, [4, 4]."""
        return np.linalg.inv(self.c2w)

    @property
    def K(self) -> np.ndarray:
        """Intrinsics matrix for the OpenCV-style projection of ``project``, [3, 3]."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points → pixel coordinates and depth.

        points: [N, 3] world. Returns (uv [N, 2] continuous pixels, depth [N] > 0 in front).
        """
        p = (points - self.c2w[:3, 3]) @ self.c2w[:3, :3]  # camera coords (OpenGL)
        depth = -p[:, 2]
        safe = np.where(np.abs(depth) < 1e-12, 1e-12, depth)
        u = self.cx + self.fx * p[:, 0] / safe
        v = self.cy - self.fy * p[:, 1] / safe
        return np.stack([u, v], axis=-1), depth

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Rays through pixel centres.

        Returns (origins [h, w, 3], unit directions [h, w, 3]) in the world.
        """
        j, i = np.meshgrid(np.arange(self.h) + 0.5, np.arange(self.w) + 0.5, indexing="ij")
        d_cam = np.stack([(i - self.cx) / self.fx, -(j - self.cy) / self.fy, -np.ones_like(i)], -1)
        d = d_cam @ self.c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(self.c2w[:3, 3], d.shape).copy(), d

    def resized(self, w: int, h: int) -> "Camera":
        """The same camera for an image resampled to ``w`` × ``h``."""
        sx, sy = w / self.w, h / self.h
        return Camera(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h)


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = np.array([0, 0, 1.0])) -> np.ndarray:
    """Camera-to-world [4, 4] (OpenGL axes) at ``eye`` looking at ``target`` with world ``up``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down: any right will do
        right = np.cross(forward, np.array([0, 1.0, 0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_camera(azimuth_deg: float, elevation_deg: float, radius: float, fov_deg: float, size: int) -> Camera:
    """A square camera on a sphere around the origin, looking at it.

    Azimuth 0 is the front (the camera on −Y, facing the face, which looks toward −Y);
    positive azimuth moves the camera toward +X (the head's left side, seen from the front:
    the viewer's right). Elevation is positive above the head's equator.
    """
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = radius * np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    return Camera(look_at(eye), f, f, size / 2, size / 2, size, size)


def to_transforms(cameras: list[Camera], file_paths: list[str], extra: dict | None = None) -> dict:
    """A nerfstudio ``transforms.json`` dict.

    Shared intrinsics go at the top level when all cameras agree, else per frame.
    """
    first = cameras[0]
    keys = ("fl_x", "fl_y", "cx", "cy", "w", "h")

    def intr(c: Camera) -> dict:
        return dict(zip(keys, (float(c.fx), float(c.fy), float(c.cx), float(c.cy), int(c.w), int(c.h))))

    shared = all(intr(c) == intr(first) for c in cameras)
    out: dict = {"camera_model": "OPENCV", **(intr(first) if shared else {})}
    out.update(extra or {})
    out["frames"] = [
        {"file_path": p, "transform_matrix": c.c2w.tolist(), **({} if shared else intr(c))}
        for c, p in zip(cameras, file_paths)
    ]
    return out


def from_frame(meta: dict, frame: dict) -> Camera:
    """The camera of one ``transforms.json`` frame (per-frame intrinsics override the top level).

    Raises KeyError / ValueError on missing or malformed fields; callers name the file.
    """
    def get(key):
        if key in frame:
            return frame[key]
        return meta[key]

    c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    if c2w.shape != (4, 4):
        raise ValueError(f"transform_matrix has shape {c2w.shape}, expected 4x4")
    if not np.all(np.isfinite(c2w)):
        raise ValueError("transform_matrix holds non-finite values")
    fx = float(get("fl_x"))
    fy = float(frame.get("fl_y", meta.get("fl_y", fx)))
    w, h = int(get("w")), int(get("h"))
    cx = float(frame.get("cx", meta.get("cx", w / 2)))
    cy = float(frame.get("cy", meta.get("cy", h / 2)))
    values = np.array([fx, fy, cx, cy, w, h], dtype=np.float64)
    if not np.all(np.isfinite(values)) or fx <= 0 or fy <= 0 or w <= 0 or h <= 0:
        raise ValueError("intrinsics must be finite and positive")
    return Camera(c2w, fx, fy, cx, cy, w, h)
