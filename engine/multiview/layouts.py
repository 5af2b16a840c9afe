"""Target-view layouts: where the multi-view cameras sit (Gen3D-Face §3.2, §4).

All layouts orbit the head centred at the origin of the Blender world (metres, face
toward −Y). Azimuth 0 looks at the face; see ``recon.cameras.orbit_camera``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recon.cameras import Camera, orbit_camera

#: Distance of the orbit cameras from the head centre, metres.
RADIUS = 1.0
#: Field of view of the orbit cameras: a 0.43 m square at the head centre, enough for a
#: head with hair and neck (FLAME's head is ~0.25 m tall without the neck).
FOV_DEG = 24.0


@dataclass(frozen=True)
class Layout:
    """Angles of N target views, degrees."""

    name: str
    azimuths: tuple[float, ...]
    elevations: tuple[float, ...]

    def cameras(self, size: int, radius: float = RADIUS, fov_deg: float = FOV_DEG) -> list[Camera]:
        """One square ``size``-pixel camera per view."""
        return [orbit_camera(a, e, radius, fov_deg, size) for a, e in zip(self.azimuths, self.elevations)]


def gen3dface(n_views: int = 16, max_elevation: float = 40.0) -> Layout:
    """Gen3D-Face's 360° layout: azimuth evenly over −180..180, elevation spread over ±40°.

    Elevations take the values linspace(−40, 40, N) in the order (5·i mod N), so that
    neighbouring azimuths differ in elevation and the whole range is covered.
    """
    if n_views < 1:
        raise ValueError("n_views must be ≥ 1")
    az = [-180.0 + 360.0 * i / n_views for i in range(n_views)]
    levels = np.linspace(-max_elevation, max_elevation, n_views) if n_views > 1 else np.zeros(1)
    step = next(k for k in (5, 3, 7, 1) if math.gcd(k, n_views) == 1)
    el = [float(levels[(step * i) % n_views]) for i in range(n_views)]
    return Layout("gen3dface", tuple(az), tuple(el))


def syncdreamer(n_views: int = 16) -> Layout:
    """SyncDreamer's angles (azimuth 0..337.5° in 22.5° steps, elevation 30°) in our convention and
    field of view, for the projection backend; a converted SyncDreamer checkpoint uses its own
    cameras from ``conventions.json`` instead (weights/conventions.py)."""
    return Layout("syncdreamer", tuple(360.0 * i / n_views for i in range(n_views)), (30.0,) * n_views)


def morphable(n_views: int = 16) -> Layout:
    """Morphable Diffusion's angles (yaw linspace(−90°, 90°), elevation 0) in our convention, for the
    projection backend; a converted checkpoint uses its own cameras (``conventions.json``)."""
    return Layout("morphable", tuple(np.linspace(-90.0, 90.0, n_views).tolist()), (0.0,) * n_views)


LAYOUTS = {"gen3dface": gen3dface, "syncdreamer": syncdreamer, "morphable": morphable}


def get_layout(name: str, n_views: int = 16) -> Layout:
    """The layout called ``name`` with ``n_views`` views."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name](n_views)
