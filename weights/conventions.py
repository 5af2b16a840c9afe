"""Camera, frame and volume conventions of a checkpoint family, stored as ``conventions.json``.

A converted checkpoint only reproduces its reference model when it sees the inputs it was
trained on: its own cameras (angles, radius, intrinsics at the model's size), its own world
frame, its pixel convention, its view embedding, its voxelisation and its sampler defaults.
The converters write these facts into the model folder; the engine reads them and never
assumes a family (``engine/multiview/diffusion/frames.py`` is the one place that maps the
checkpoint's frame to the engine's world). numpy only: ``weights`` never imports ``engine``.

Values below are read from the public reference code (commits in docs/diffusion.md):
SyncDreamer ``meta_info/camera-16.pkl``, ``ldm/models/diffusion/sync_dreamer*.py``; Morphable
Diffusion ``generate_face.py``, ``ldm/data/facescape.py``, ``ldm/models/diffusion/utils.py``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .safeload import WeightsError

FILENAME = "conventions.json"
FAMILIES = ("gen3dface", "syncdreamer", "morphable")
_CHOICES = {
    "layout": ("explicit", "gen3dface"),
    "pixel_convention": ("continuous", "latent_index"),
    "prior_anchor": ("origin", "flame"),
    "view_embedding": ("relative", "zero123", "constant"),
    "voxelisation": ("neuralbody", "morphable"),
    "input_latent": ("mode", "sample"),
    "clip_resize": ("antialias_bicubic", "kornia_bicubic"),
}


@dataclass(frozen=True)
class Conventions:
    """Everything a family's checkpoint assumes about its inputs (all lengths in checkpoint units)."""

    family: str
    """gen3dface (our own models), syncdreamer or morphable."""
    image_size: int
    """View size in pixels that ``intrinsics`` refer to (the model's size)."""
    layout: str
    """explicit: the views are ``w2c``; gen3dface: the engine's 360° layout for any view count."""
    azimuths_deg: tuple[float, ...]
    """The checkpoint's own azimuth of each view (its convention; used by the zero123 embedding)."""
    elevations_deg: tuple[float, ...]
    """The checkpoint's own elevation of each view, degrees."""
    w2c: tuple[tuple[tuple[float, ...], ...], ...]
    """Per view, world-to-camera [3, 4] in the checkpoint frame, OpenCV axes (+x right, +y down, +z ahead)."""
    intrinsics: tuple[float, float, float, float]
    """(fx, fy, cx, cy) in pixels at ``image_size``, as the reference writes its K."""
    pixel_convention: str
    """continuous: pixel i covers [i, i+1); latent_index: K·(1/8) gives latent-pixel *indices*
    (grid_sample align_corners=True, frustum rays through integer indices): half a latent pixel apart."""
    checkpoint_from_world: tuple[tuple[float, ...], ...]
    """[4, 4] similarity mapping the engine's world (Blender, Z up, metres, face toward −Y) into the
    checkpoint frame; with ``prior_anchor='flame'`` world points are first moved by FLAME's native
    origin (see ``engine/multiview/diffusion/frames.py``)."""
    prior_anchor: str
    """origin: the head centre is the world origin; flame: the reference places FLAME by its native origin."""
    view_embedding: str
    """relative: (Δel, sin Δaz, cos Δaz, 0) from the cameras; zero123: SyncDreamer's, from the layout's
    angles with the input at azimuth 0 and elevations negated; constant: ``view_embedding_constant``."""
    view_embedding_constant: tuple[float, float, float, float]
    """The embedding of every view when ``view_embedding='constant'`` (Morphable: 0, 0, 1, 0)."""
    volume_length: float
    """Half extent of the feature volume cube, checkpoint units."""
    frustum_length: float
    """Each frustum spans camera distance ± this, checkpoint units."""
    voxel_size: float
    """Voxel edge of the mesh voxelisation, checkpoint units."""
    voxelisation: str
    """neuralbody: 4 voxels of padding, floor, grid a multiple of 32; morphable (facescape.py): no
    padding, round, grid (ceil | 3) + 1."""
    eta: float
    """DDIM η of the reference sampler (SyncDreamer, Morphable: 1.0; the last step adds no noise)."""
    input_latent: str
    """How the input image is encoded: VAE posterior ``sample`` (references) or its ``mode``."""
    clip_resize: str
    """CLIP input resize: kornia_bicubic (references: bicubic, align_corners=True, no antialias, from [−1, 1])
    or antialias_bicubic."""
    source: str = ""
    """Where the values come from (reference files)."""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {'|'.join(choices)}, got {getattr(self, name)!r}")
        n = len(self.azimuths_deg)
        if self.layout == "explicit" and (n == 0 or len(self.elevations_deg) != n or len(self.w2c) != n):
            raise ValueError("an explicit layout needs as many azimuths, elevations and w2c as views")
        if any(np.asarray(m, dtype=float).shape != (3, 4) for m in self.w2c):
            raise ValueError("every w2c must be 3x4")
        m = np.asarray(self.checkpoint_from_world, dtype=float)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError("checkpoint_from_world must be a finite 4x4 matrix")
        r = m[:3, :3]
        s = np.cbrt(np.linalg.det(r))
        if not s > 0 or not np.allclose(r @ r.T, s * s * np.eye(3), atol=1e-6 * s * s) or not np.allclose(m[3], (0, 0, 0, 1)):
            raise ValueError("checkpoint_from_world must be a rotation times a positive scale plus a translation")
        if min(self.volume_length, self.frustum_length, self.voxel_size, self.image_size) <= 0 or not 0 <= self.eta <= 1:
            raise ValueError("lengths and image_size must be positive, eta in [0, 1]")

    @property
    def n_views(self) -> int | None:
        """The checkpoint's view count (None: any, the gen3dface layout)."""
        return len(self.w2c) if self.layout == "explicit" else None

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "Conventions":
        """Every field is required (a missing one would silently change the model); unknown keys are an error."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tup(v) for k, v in data.items()})


def write(conv: Conventions, folder: str | Path) -> Path:
    """Write ``folder/conventions.json``."""
    path = Path(folder) / FILENAME
    path.write_text(json.dumps(conv.to_dict(), indent=1))
    return path


def read_json_object(path: Path, missing: str = "file not found") -> dict:
    """The JSON object in a model folder's file; ``WeightsError`` naming the file otherwise."""
    if not path.is_file():
        raise WeightsError(path, missing)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(path, "expected a JSON object")
    return data


def read(folder: str | Path) -> Conventions:
    """Read and validate ``folder/conventions.json``; ``WeightsError`` naming the file otherwise."""
    path = Path(folder) / FILENAME
    data = read_json_object(path, "file not found (re-run the converter: it writes the checkpoint's conventions)")
    if data.get("family") not in FAMILIES:
        raise WeightsError(path, f"unknown checkpoint family {data.get('family')!r}; known: {', '.join(FAMILIES)}")
    try:
        return Conventions.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise WeightsError(path, str(exc)) from None


# -- the families ------------------------------------------------------------------------------

def _similarity(rot: np.ndarray, scale: float, trans=(0.0, 0.0, 0.0)) -> tuple:
    m = np.eye(4)
    m[:3, :3] = scale * np.asarray(rot, dtype=float)
    m[:3, 3] = trans
    return tuple(tuple(float(x) for x in row) for row in m)


def _rows(m: np.ndarray) -> tuple:
    return tuple(tuple(float(x) for x in row) for row in m)


def rodrigues(axis_angle) -> np.ndarray:
    """Rotation matrix [3, 3] of an axis-angle vector (pytorch3d's ``so3_exponential_map``)."""
    w = np.asarray(axis_angle, dtype=float)
    theta = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    if theta < 1e-12:
        return np.eye(3) + k
    return np.eye(3) + math.sin(theta) / theta * k + (1 - math.cos(theta)) / theta ** 2 * (k @ k)


def syncdreamer_w2c(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """SyncDreamer's camera (``camera-16.pkl``): Z up, azimuth from +X toward +Y, looking at the
    origin, OpenCV axes with +x = forward × Z. Returns w2c [3, 4]."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    return np.concatenate([rot, -(rot @ eye)[:, None]], 1)


def morphable_w2c(yaw_deg: float, radius: float) -> np.ndarray:
    """Morphable Diffusion's virtual camera (``generate_face.py``): at radius·(sin yaw, 0, cos yaw),
    R = euler 'xyz' (−180°, yaw, 0) (extrinsic: R_y(yaw)·R_x(−180°)), t = −R·position. w2c [3, 4]."""
    b = math.radians(yaw_deg)
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rot = ry @ np.diag([1.0, -1.0, -1.0])
    pos = radius * np.array([math.sin(b), 0.0, math.cos(b)])
    return np.concatenate([rot, -(rot @ pos)[:, None]], 1)


#: FLAME's native frame (Y up, face toward +Z) → the engine's world (Z up, face toward −Y).
FLAME_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
#: generate_face.py's placement of a MICA FLAME mesh: ×1.087, axis-angle pose, translation, ×2.5,
#: then FaceScape's axes ((x, y, z) ↦ (x, z, −y)).
MORPHABLE_FLAME_SCALE = 1.087 * 2.5
MORPHABLE_FLAME_POSE = (1.6811e+00, -2.6845e-02, -2.8883e-02)
MORPHABLE_FLAME_T = (8.5418e-04, -3.4041e-03, 1.0564e-02)
MORPHABLE_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: SyncDreamer's frame in engine metres per unit: its 1.5-unit, 49.1° camera then sees 0.41 m at
#: the origin, about what the engine's input crop covers (a head with hair).
SYNCDREAMER_METRES_PER_UNIT = 0.3


def gen3dface(volume_length: float = 0.3, frustum_length: float = 0.3 * math.sqrt(3.0), voxel_size: float = 0.005,
              image_size: int = 256, fov_deg: float = 24.0) -> Conventions:
    """Our own models: the engine's 360° layout and world, continuous pixels (the paper's layout)."""
    f = 0.5 * image_size / math.tan(math.radians(fov_deg) / 2)
    return Conventions(
        family="gen3dface", image_size=image_size, layout="gen3dface", azimuths_deg=(), elevations_deg=(), w2c=(),
        intrinsics=(f, f, image_size / 2, image_size / 2), pixel_convention="continuous",
        checkpoint_from_world=_similarity(np.eye(3), 1.0), prior_anchor="origin", view_embedding="relative",
        view_embedding_constant=(0.0, 0.0, 1.0, 0.0), volume_length=volume_length, frustum_length=frustum_length,
        voxel_size=voxel_size, voxelisation="neuralbody", eta=0.0, input_latent="mode", clip_resize="antialias_bicubic",
        source="engine/multiview/layouts.py (Gen3D-Face §4: azimuth −180..180, elevation ±40)")


def syncdreamer(n_views: int = 16, image_size: int = 256) -> Conventions:
    """SyncDreamer: 16 views at azimuth 0..337.5° from +X, elevation 30°, distance 1.5, fx = 280 px at 256²."""
    az = tuple(360.0 * i / n_views for i in range(n_views))
    el = (30.0,) * n_views
    k = image_size / 256
    # engine −Y (the face) → SyncDreamer +X (its view 0); Z stays up
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return Conventions(
        family="syncdreamer", image_size=image_size, layout="explicit", azimuths_deg=az, elevations_deg=el,
        w2c=tuple(_rows(syncdreamer_w2c(a, e, 1.5)) for a, e in zip(az, el)),
        intrinsics=(280.0 * k, 280.0 * k, 128.0 * k, 128.0 * k), pixel_convention="latent_index",
        checkpoint_from_world=_similarity(rot, 1.0 / SYNCDREAMER_METRES_PER_UNIT), prior_anchor="origin",
        view_embedding="zero123", view_embedding_constant=(0.0, 0.0, 1.0, 0.0), volume_length=0.5,
        frustum_length=0.86603, voxel_size=0.005, voxelisation="neuralbody", eta=1.0, input_latent="sample",
        clip_resize="kornia_bicubic",
        source="SyncDreamer meta_info/camera-16.pkl, ldm/models/diffusion/sync_dreamer.py, sync_dreamer_utils.py")


def morphable_checkpoint_from_flame() -> np.ndarray:
    """[4, 4]: FLAME's native frame (metres) → Morphable's frame, as generate_face.py places FLAME."""
    rot = MORPHABLE_AXES @ rodrigues(MORPHABLE_FLAME_POSE)
    m = np.eye(4)
    m[:3, :3] = MORPHABLE_FLAME_SCALE * rot
    m[:3, 3] = 2.5 * MORPHABLE_AXES @ np.asarray(MORPHABLE_FLAME_T)
    return m


def morphable(n_views: int = 16, image_size: int = 256) -> Conventions:
    """Morphable Diffusion (facescape): yaw linspace(−90°, 90°), elevation 0, radius 4.5, fx 1545.24 px at
    256² (9.47°), Y-up frame, FLAME placed by generate_face.py, view embedding (0, 0, 1, 0)."""
    yaw = tuple(float(a) for a in np.linspace(-90.0, 90.0, n_views))
    k = image_size / 256
    f = 1545.23757707405 * k
    # world → FLAME native: v_f = FLAME_TO_WORLDᵀ · (w + FLAME origin in world axes)
    to_flame = np.eye(4)
    to_flame[:3, :3] = FLAME_TO_WORLD.T
    m = morphable_checkpoint_from_flame() @ to_flame
    return Conventions(
        family="morphable", image_size=image_size, layout="explicit", azimuths_deg=yaw, elevations_deg=(0.0,) * n_views,
        w2c=tuple(_rows(morphable_w2c(a, 4.5)) for a in yaw), intrinsics=(f, f, 128.0 * k, 128.0 * k),
        pixel_convention="latent_index", checkpoint_from_world=_rows(m), prior_anchor="flame",
        view_embedding="constant", view_embedding_constant=(0.0, 0.0, 1.0, 0.0), volume_length=0.5,
        frustum_length=0.86603, voxel_size=0.005, voxelisation="morphable", eta=1.0, input_latent="sample",
        clip_resize="kornia_bicubic",
        source="morphablediffusion generate_face.py, ldm/data/facescape.py, ldm/models/diffusion/morphable_diffusion.py")


BUILDERS = {"gen3dface": gen3dface, "syncdreamer": syncdreamer, "morphable": morphable}
