"""Public entry of ``recon``: posed views (+ an optional prior mesh) → textured GLB/OBJ.

    from recon.api import ReconConfig, reconstruct
    result = reconstruct("run/transforms.json", "run/mesh", ReconConfig(steps=800), prior="prior.glb")

Steps (Gen3D-Face §3.3, NeuS with nerfacc):
 1. load the views (``recon.dataset``) and fit a normalised scene box to their visual hull;
 2. initialise the SDF from the prior mesh (its signed distance on a grid, clipped to the
    masks' visual hull; NeuS residual starts at zero), else from the visual hull (or a
    sphere), and seed nerfacc's occupancy grid from it: with a prior, from just inside the
    prior out to the hull, so surface the prior lacks (hair, ears) can still appear;
 3. optimise NeuS coarse-to-fine (``recon.neus``), checking ``should_stop`` every step;
 4. marching cubes → largest component → small holes closed → decimated (``recon.mesh``);
 5. UV layout (xatlas on a decimated proxy, or the prior's template layout), base colour
    baked from the views by ``recon.bake`` (colour field fills the rest), GLB + OBJ + coverage mask.
Deterministic for a seed on CPU.
"""
from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import mesh as meshing
from ._nerfacc_backend import RayOps, select_ops
from .dataset import ViewSet, load_transforms
from .errors import ReconInputError
from .fields import FieldConfig, NeuSField
from .neus import NeuSConfig, train
from .sampling import (SceneBox, all_rays, fit_scene_box, full_estimator, hull_sdf_grid, make_estimator,
                       mesh_sdf_grid)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ReconConfig:
    """Settings of one reconstruction (defaults: 16 views of 256² with a prior in about a
    minute on a CPU core, texture included; see bench/recon.py)."""

    steps: int = 400
    """NeuS optimisation steps (with a prior 300 already reach 0.03 % chamfer on the bench
    blob; from a sphere, give it several times more)."""
    batch_rays: int = 1024
    """Rays per optimisation step."""
    lr: float = 1e-2
    """Learning rate of the tri-planes and MLPs."""
    seed: int = 0
    """Random seed (ray batches, stratified sampling, eikonal points): same seed, same mesh."""
    resolution: int = 256
    """Marching-cubes grid resolution over the scene box."""
    target_faces: int = 50_000
    """Face count after decimation."""
    texture_size: int = 2048
    """Base-colour texture size (pixels, square)."""
    occupancy: bool = True
    """Skip empty space with nerfacc's occupancy grid (False: march the whole box)."""
    occupancy_resolution: int = 64
    """Occupancy grid resolution over the scene box."""
    render_step_size: float = 0.01
    """Ray-marching step in normalised units (the box is [-1, 1]³)."""
    start_levels: int = 2
    """Coarse-to-fine: tri-plane levels active at the start."""
    full_levels_at: float = 0.5
    """Coarse-to-fine: fraction of the steps after which all levels are active."""
    prior_grid: int = 96
    """Resolution of the prior mesh's signed-distance grid (SDF initialisation)."""
    init_inv_s_prior: float = 150.0
    """Initial NeuS sharpness s with a prior (the surface is already close; on the head
    bench 60 ended less accurate than 150: chamfer 0.44 % vs 0.34 %)."""
    prior_hull: bool = True
    """Intersect the prior with the masks' visual hull and seed the occupancy grid from the
    prior's surface out to the hull (False: trust the prior, seed only near its surface)."""
    init_inv_s: float = 40.0
    """Initial NeuS sharpness s without a prior (from the visual hull or a sphere)."""
    hull_init: bool = True
    """Without a prior, start from the visual hull of the masks (False: from a sphere, as NeuS)."""
    plane_resolutions: tuple[int, ...] = (32, 64, 128, 256)
    """Tri-plane encoding resolutions, coarse to fine."""
    eikonal_weight: float = 0.1
    """Weight of the eikonal regulariser."""
    mask_weight: float = 0.1
    """Weight of the mask (alpha) loss."""
    texture: bool = True
    """Bake a texture and export GLB + OBJ (False: stop after the mesh, for measurements)."""
    uv_layout: str = "xatlas"
    """UV layout of the exported head: "xatlas" (charts of the recon surface) or "template"
    (the prior's fixed layout, transferred by closest point; needs ``prior_uv``)."""
    unwrap_faces: int = 5000
    """xatlas unwraps a decimated copy of at most this many faces and the charts are
    transferred back (0: the full mesh; 50k faces took 20-27 s of xatlas alone)."""
    angle_strictness: float = 2.0
    """Bake: p in the view weight cos^p (``recon.bake.BakeConfig``)."""
    edge_expansion: int = 8
    """Bake: texels of padding around the charts."""

    def neus(self) -> NeuSConfig:
        return NeuSConfig(steps=self.steps, batch_rays=self.batch_rays, lr=self.lr,
                          render_step_size=self.render_step_size, start_levels=self.start_levels,
                          full_levels_at=self.full_levels_at, eikonal_weight=self.eikonal_weight,
                          mask_weight=self.mask_weight, occ_update_every=16 if self.occupancy else 0,
                          early_stop_eps=1e-3 if self.occupancy else 0.0)


@dataclass
class ReconResult:
    """mesh_glb / mesh_obj: written files (None when ``texture=False``); metrics: timings, sizes."""

    mesh_glb: Path | None
    mesh_obj: Path | None
    metrics: dict = field(default_factory=dict)


@dataclass
class Fitted:
    """A trained field with what is needed to query it in the world."""

    field: NeuSField
    estimator: object
    box: SceneBox
    ops: RayOps
    views: ViewSet
    stats: dict

    def sdf_world(self, x: np.ndarray) -> np.ndarray:
        """x: [n, 3] world → sdf [n] (world units)."""
        with torch.no_grad():
            t = torch.from_numpy(self.box.to_unit(x)).float().to(self.device)
            return self.field.sdf(t).cpu().numpy() * self.box.scale

    def colour_world(self, x: np.ndarray) -> np.ndarray:
        """x: [n, 3] world → rgb [n, 3] in [0, 1] (the colour field at the surface)."""
        out = []
        with torch.no_grad():
            for c in np.array_split(self.box.to_unit(x), max(1, len(x) // 65536)):
                t = torch.from_numpy(c).float().to(self.device)
                _, feat = self.field.geometry(t)
                out.append(self.field.colour(t, feat).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 3), np.float32)

    @property
    def device(self):
        return next(self.field.parameters()).device


def load_prior(prior) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V, 3] float64, faces [F, 3] int64) from a (vertices, faces) pair or a mesh file."""
    if isinstance(prior, (str, Path)):
        import trimesh

        path = Path(prior)
        if not path.is_file():
            raise ReconInputError(path, "prior mesh not found")
        try:
            loaded = trimesh.load(path, force="mesh", process=False)
        except Exception as exc:  # trimesh raises many types for bad files
            raise ReconInputError(path, f"cannot read prior mesh ({exc})") from None
        if isinstance(loaded, trimesh.Scene) or len(getattr(loaded, "faces", [])) == 0:
            raise ReconInputError(path, "prior mesh has no faces")
        v, f = np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)
        if path.suffix.lower() in (".glb", ".gltf"):  # glTF is Y-up: back to Blender's Z-up world
            v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], -1)
        src = path
    else:
        v, f = (np.asarray(a) for a in prior)
        v, f, src = v.astype(np.float64), f.astype(np.int64), Path("<prior>")
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ReconInputError(src, f"prior must be vertices [V, 3] and faces [F, 3], got {v.shape}, {f.shape}")
    if not np.isfinite(v).all() or f.min() < 0 or f.max() >= len(v):
        raise ReconInputError(src, "prior mesh has non-finite vertices or out-of-range faces")
    return v, f


def _initial_sdf(views: ViewSet, box: SceneBox, config: ReconConfig, prior_vf) -> torch.Tensor | None:
    """The base SDF grid [R, R, R] (normalised units), or None for NeuS's sphere.

    A prior is intersected with the masks' visual hull (max of the two SDFs): every view
    agrees that space outside the hull is empty, whatever the fitted template claims, while
    inside the hull the template's shape is the best guess (Gen3D-Face §3.3 initialises NeuS
    from the fitted head, which misses hair volume and ear detail).
    """
    if prior_vf is None:
        return torch.from_numpy(hull_sdf_grid(views, box, res=config.prior_grid)) if config.hull_init else None
    sdf = mesh_sdf_grid(*prior_vf, box, res=config.prior_grid, seed=config.seed)
    if config.prior_hull:
        # a margin of two grid cells: the hull's SDF is a voxel staircase, and where an
        # inflated prior merely touches it, clipping would print the stairs on the surface
        margin = 2 * 2.0 / (config.prior_grid - 1)
        sdf = np.maximum(sdf, hull_sdf_grid(views, box, res=config.prior_grid) - margin)
    return torch.from_numpy(sdf)


def _occupancy_band(config: ReconConfig, prior_sdf, has_prior: bool) -> tuple[float, float]:
    """(inner, outer) SDF band (normalised units) of the cells seeded occupied.

    From a sphere, which may be far from the object: the whole visual hull (updates then
    shrink it). From the hull: two cells either side of its surface. From a prior: two cells
    inside it and everything outside it up to the hull, because the true surface may lie
    anywhere between the template and the hull (hair, ears); cells never seeded are never
    sampled, so surface there could never appear (the trap of issue 4).
    """
    cell = 2.0 / config.occupancy_resolution
    if prior_sdf is None:
        return float("inf"), float("inf")
    if has_prior and config.prior_hull:
        return 2.0 * cell, float("inf")
    return 2.0 * cell, 2.0 * cell


def fit(views: ViewSet, config: ReconConfig, prior=None, progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None, device: str = "cpu") -> Fitted:
    """Steps 1-3: scene box, initialisation, NeuS optimisation. Deterministic for ``config.seed``."""
    ops = select_ops(device)
    prior_vf = load_prior(prior) if prior is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        box = fit_scene_box(views, prior_vf[0] if prior_vf is not None else None)
        fcfg = FieldConfig(plane_resolutions=tuple(config.plane_resolutions),
                           init_inv_s=config.init_inv_s_prior if prior_vf is not None else config.init_inv_s)
        prior_sdf = _initial_sdf(views, box, config, prior_vf)
        field_ = NeuSField(fcfg, prior_sdf).to(device)
        step = config.render_step_size
        if config.occupancy:
            estimator = make_estimator(views, box, field_.sdf, config.occupancy_resolution,
                                       _occupancy_band(config, prior_sdf, prior_vf is not None), device)
        else:
            estimator = full_estimator(config.occupancy_resolution, device)
        rays = all_rays(views, box)
        stats = train(field_, estimator, ops, rays, config.neus(), config.seed, progress, should_stop,
                      update_occupancy=config.occupancy)
    field_.encoding.set_active_levels(field_.encoding.n_levels)
    return Fitted(field_, estimator, box, ops, views, stats | {"scene_scale": box.scale, "step": step})


def extract_mesh(fitted: Fitted, config: ReconConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: (vertices [V, 3] world, faces [F, 3]) cleaned and decimated."""
    vol = meshing.sdf_volume(fitted.field.sdf, config.resolution, fitted.device)
    v, f = meshing.marching_cubes_mesh(vol, fitted.box)
    return meshing.clean_mesh(v, f, config.target_faces)


def reconstruct(transforms_path: str | Path, out_dir: str | Path, config: ReconConfig = ReconConfig(),
                prior=None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                device: str = "cpu", name: str = "mesh", prior_uv=None) -> ReconResult:
    """Reconstruct a textured mesh from a nerfstudio ``transforms.json``.

    transforms_path: RGBA views (or RGB + ``mask_path``) with cameras, Blender world.
    out_dir: receives ``<name>.glb`` and ``<name>.obj`` (+ ``.mtl``, ``.png``); name defaults to "mesh".
    prior: optional (vertices [V, 3], faces [F, 3]) in the same world, or a mesh file path
        (.glb/.gltf are read Y-up and mapped back to Z-up); initialises the SDF and the
        occupancy grid.
    progress: called as ``progress(step, total, message)``.
    should_stop: polled every step; True → ``ReconCancelled`` (nothing is written).
    device: torch device ("cpu", "cuda"); picks nerfacc's kernels or the CPU stand-ins.
    prior_uv: (uvs [V', 2], faces_uv [F, 3]) of the prior, for ``uv_layout="template"``.
    Raises ReconInputError (bad input), ReconError (diverged / no surface), ReconCancelled.
    """
    t0 = time.perf_counter()
    views = load_transforms(transforms_path)
    fitted = fit(views, config, prior, progress, should_stop, device)
    t_fit = time.perf_counter()
    v, f = extract_mesh(fitted, config)
    t_mesh = time.perf_counter()
    metrics = dict(fitted.stats, views=len(views), vertices=len(v), faces=len(f), backend=fitted.ops.name,
                   fit_seconds=t_fit - t0, mesh_seconds=t_mesh - t_fit)
    glb = obj = None
    if config.texture:
        if should_stop is not None and should_stop():
            from .errors import ReconCancelled
            raise ReconCancelled()
        from .bake import BakeConfig

        bake_views = [(img, cam, m > 0.5) for img, cam, m in zip(views.images, views.cameras, views.masks)]
        template = None
        if config.uv_layout == "template":
            if prior is None or prior_uv is None:
                raise ReconInputError(Path(str(transforms_path)), "uv layout 'template' needs a prior mesh with UVs")
            template = (*load_prior(prior), *prior_uv)
        v2, f2, uvs, tex, cover, bake_stats = meshing.bake_texture(
            v, f, bake_views, config.texture_size, fitted.colour_world, config.uv_layout, config.unwrap_faces,
            template, BakeConfig(angle_strictness=config.angle_strictness, edge_expansion=config.edge_expansion))
        glb, obj = meshing.export(Path(out_dir), name, v2, f2, uvs, tex, cover)
        metrics.update(bake_stats)
        metrics["texture_seconds"] = time.perf_counter() - t_mesh
    metrics["total_seconds"] = time.perf_counter() - t0
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("recon done in %.1f s: %d faces", metrics["total_seconds"], len(f))
    return ReconResult(glb, obj, metrics)


def config_from_dict(values: dict) -> ReconConfig:
    """A ReconConfig from a dict; unknown keys are an error (docs/architecture.md, "Conventions")."""
    known = {f.name for f in fields(ReconConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ReconConfig keys: {', '.join(unknown)}")
    return ReconConfig(**values)
