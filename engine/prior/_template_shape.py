"""The built-in head's surface: an implicit head sculpted around mediapipe's canonical face.

Used when no FLAME is installed (the paper's prior, §3.1, is FLAME; this is the open
stand-in). The surface is the zero level of a signed distance built from simple parts:

1. the face: a height field ``y = D(x, z)`` through mediapipe's canonical face landmarks
   (thin-plate interpolation), kept inside the face oval and a few cm deep, so the
   template's face *is* the canonical face (nose, lips, eye sockets, brow, chin);
2. cranium, cheek/jaw mass, neck (capped) and ears (with a concha) as ellipsoids and
   capsules, joined to the face with a smooth minimum (rounded seams, no creases);
3. marching cubes (scikit-image), largest component, Taubin smoothing (volume-preserving).

Everything is deterministic (no random numbers); ``template.py`` caches the result.
Units are metres in the Blender world: Z up, face toward −Y, head centred at the origin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: Canonical face landmarks (cm, x right, y up, z out of the face), Apache-2.0 mediapipe data.
CANONICAL_FILE = Path(__file__).with_name("data") / "mediapipe_canonical_468.txt"

#: mediapipe FACEMESH_FACE_OVAL, in order around the face (forehead → right of the image → chin).
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                      377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])
#: Eye contours (subject's right eye = image left, then left eye), used for the iris centres.
RIGHT_EYE = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246])
LEFT_EYE = np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466])

#: Canonical cm → world metres: scale and the offset that centres the head (crown–chin and
#: front–back midpoints at the origin; the canonical face spans chin −9.4 … forehead 8.3 cm).
_SCALE = 0.0105
_OFFSET = np.array([0.0, -0.044, -0.021])


def canonical_landmarks() -> np.ndarray:
    """mediapipe's 478 points placed in the template's world (metres).

    The 468 face-mesh points come from the canonical model; the 10 iris points (468–477,
    not in the canonical model) are put at the eye centres (468 / 473) and on a 5.8 mm
    circle around them (469–472 / 474–477: toward the image right, up, left, down).
    Returns [478, 3] float64.
    """
    c = np.loadtxt(CANONICAL_FILE)
    if c.shape != (468, 3):
        raise ValueError(f"{CANONICAL_FILE}: expected 468 rows of x y z, got {c.shape}")
    world = np.stack([c[:, 0], -c[:, 2], c[:, 1]], axis=1) * _SCALE + _OFFSET
    iris = []
    r = 0.0058
    for eye in (RIGHT_EYE, LEFT_EYE):
        centre = world[eye].mean(axis=0)
        ring = [centre + np.array(d) * r for d in ((1, 0, 0), (0, 0, 1), (-1, 0, 0), (0, 0, -1))]
        iris += [centre, *ring]
    return np.concatenate([world, np.array(iris)], axis=0)


# --- signed-distance building blocks (negative inside) -------------------------------

def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union with a blend of width ``k``)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (intersection / subtraction with a rounded edge)."""
    return -_smin(-a, -b, k)


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate SDF of an axis-aligned ellipsoid (exact on the axes, good enough for blending)."""
    q = (p - np.asarray(centre)) / np.asarray(radii)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(radii), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _rotate_z(p: np.ndarray, centre, angle: float) -> np.ndarray:
    """Points expressed in a frame rotated by ``angle`` about the vertical through ``centre``."""
    c, s = np.cos(angle), np.sin(angle)
    q = p - np.asarray(centre)
    return np.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1], q[..., 2]], -1) + centre


def _rotate_x(p: np.ndarray, centre, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    q = p - np.asarray(centre)
    return np.stack([q[..., 0], c * q[..., 1] + s * q[..., 2], -s * q[..., 1] + c * q[..., 2]], -1) + centre


def _polygon_sdf(xz: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance from 2D points [N, 2] to a closed polygon [M, 2] (negative inside)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a  # [M, 2]
    ap = xz[:, None, :] - a[None]  # [N, M, 2]
    t = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    dist = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)
    # even-odd rule: count edges crossed by a ray toward +x
    ya, yb = a[None, :, 1], b[None, :, 1]
    py = xz[:, None, 1]
    cross = (ya > py) != (yb > py)
    xi = a[None, :, 0] + (py - ya) / np.where(yb == ya, 1e-12, yb - ya) * ab[None, :, 0]
    inside = (cross & (xz[:, None, 0] < xi)).sum(axis=1) % 2 == 1
    return np.where(inside, -dist, dist)


class _FaceField:
    """The face as a height field ``y = D(x, z)`` through the canonical landmarks, on a 2D grid."""

    def __init__(self, lmk: np.ndarray, xs: np.ndarray, zs: np.ndarray):
        from scipy.interpolate import RBFInterpolator

        pts = lmk[:468]
        rbf = RBFInterpolator(pts[:, [0, 2]], pts[:, 1], kernel="thin_plate_spline", smoothing=1e-7)
        gx, gz = np.meshgrid(xs, zs, indexing="ij")
        xz = np.stack([gx.ravel(), gz.ravel()], 1)
        self.depth = rbf(xz).reshape(gx.shape)  # [nx, nz]
        # shrink the oval a little so the slab's side walls hide inside the cranium and jaw
        oval = pts[FACE_OVAL][:, [0, 2]] * np.array([0.92, 1.0])  # the sides belong to cheeks and ears
        self.oval = (_polygon_sdf(xz, oval) + 0.002).reshape(gx.shape)
        gy_x, gy_z = np.gradient(self.depth, xs, zs)
        # the height field's distance is shortened by its slope: divide by |∇(D − y)|
        self.slope = np.sqrt(1 + gy_x ** 2 + gy_z ** 2)

    def sdf(self, y: np.ndarray) -> np.ndarray:
        """[nx, ny, nz] distance to the face slab (front = canonical face, 4 cm deep, y ≤ 0)."""
        front = (self.depth[:, None, :] - y[None, :, None]) / self.slope[:, None, :]
        slab = _smax(front, np.broadcast_to(self.oval[:, None, :], front.shape), 0.012)
        back = np.minimum(self.depth[:, None, :] + 0.04, 0.0) - y[None, :, None]
        return _smax(slab, -back, 0.01)


def _ears(p: np.ndarray) -> np.ndarray:
    """Both ears: a tilted, flattened ellipsoid with a bowl (concha) cut into its outer face."""
    out = None
    for side in (-1.0, 1.0):
        centre = np.array([side * 0.071, 0.010, -0.012])
        q = _rotate_z(p, centre, side * 0.35)  # the back edge stands off the skull
        q = _rotate_x(q, centre, -0.25)  # tops lean back
        ear = _ellipsoid(q, centre, (0.011, 0.019, 0.032))
        bowl = _ellipsoid(q, centre + np.array([side * 0.0095, 0.002, -0.005]), (0.006, 0.010, 0.015))
        ear = _smax(ear, -bowl, 0.003)
        out = ear if out is None else np.minimum(out, ear)
    return out


def _body(p: np.ndarray) -> np.ndarray:
    """Cranium + cheek/jaw mass + neck (capped at the bottom with a rounded rim)."""
    cranium = _ellipsoid(p, (0.0, 0.012, 0.020), (0.074, 0.094, 0.096))
    occiput = _ellipsoid(p, (0.0, 0.040, 0.000), (0.066, 0.070, 0.080))
    # the forehead curves forward to meet the canonical face's top edge, but stays behind the eyes
    forehead = _ellipsoid(p, (0.0, 0.000, 0.050), (0.066, 0.090, 0.070))
    cheeks = _ellipsoid(p, (0.0, -0.018, -0.028), (0.066, 0.068, 0.055))
    jaw = _ellipsoid(p, (0.0, -0.004, -0.050), (0.060, 0.064, 0.066))
    head = _smin(_smin(cranium, occiput, 0.02), forehead, 0.02)
    head = _smin(head, _smin(cheeks, jaw, 0.02), 0.03)
    # neck: leaning slightly forward from inside the head down to z = −0.20, widening below
    # z = −0.13 into the start of the shoulders (trapezius: much wider than deep), so the
    # views show a neck that continues into a body rather than a cut cylinder
    axis_y = 0.022 + 0.10 * (p[..., 2] + 0.05)
    t = np.clip((-0.13 - p[..., 2]) / 0.07, 0.0, 1.0)
    t = t * t * (3 - 2 * t)
    rx, ry = 0.0546 + 0.030 * t, 0.052 + 0.012 * t
    neck = (np.hypot(p[..., 0] / rx, (p[..., 1] - axis_y) / ry) - 1.0) * np.minimum(rx, ry)
    neck = _smax(neck, p[..., 2] + 0.03, 0.02)
    neck = _smax(neck, -0.1987 - p[..., 2], 0.012)  # cap off the grid planes
    return _smin(head, neck, 0.03)


def head_sdf_grid(spacing: float = 0.0025) -> tuple[np.ndarray, np.ndarray]:
    """The head's signed distance sampled on a regular grid.

    Returns (sdf [nx, ny, nz] float32, origin [3]) with ``spacing`` metres between samples.
    """
    lo, hi = np.array([-0.11, -0.15, -0.225]), np.array([0.11, 0.13, 0.145])
    xs, ys, zs = (np.arange(a, b + spacing / 2, spacing) for a, b in zip(lo, hi))
    face = _FaceField(canonical_landmarks(), xs, zs)
    face_sdf = face.sdf(ys)
    sdf = np.empty((len(xs), len(ys), len(zs)), np.float32)
    for i, x in enumerate(xs):  # slices bound memory (~1 M points in all)
        gy, gz = np.meshgrid(ys, zs, indexing="ij")
        p = np.stack([np.full_like(gy, x), gy, gz], -1)
        d = _smin(_body(p), _ears(p), 0.006)
        # the face is recessed into the head's front: blend narrowly so features stay sharp
        sdf[i] = _smin(d, face_sdf[i], 0.010)
    return sdf, lo


def build_surface(spacing: float = 0.0025, smooth_iterations: int = 8):
    """Marching cubes on ``head_sdf_grid`` → a closed, smoothed triangle mesh.

    Returns (vertices [V, 3] float64, faces [F, 3] int64), counter-clockwise seen from outside.
    """
    import trimesh
    from skimage.measure import marching_cubes

    sdf, origin = head_sdf_grid(spacing)
    verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(spacing,) * 3, method="lewiner")
    mesh = trimesh.Trimesh(verts + origin, faces[:, ::-1], process=True)  # skimage winds inward for SDF<0 inside
    parts = mesh.split(only_watertight=False)
    mesh = max(parts, key=lambda m: len(m.faces))
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smooth_iterations)
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
