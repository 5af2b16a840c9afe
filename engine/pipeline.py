"""The ``generate`` job: photo → preprocess → prior → multiview → (recon) → result.json.

One numbered body (docs/architecture.md, "Data flow"); every stage lives in its own module and is
imported lazily so that ``engine`` stays light. The run directory is atomic (``rundir``).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from . import protocol
from .context import RunContext
from .errors import BadInput
from .rundir import RunDir, manifest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "projection", "diffusion")
RECON_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class GenerateConfig:
    """Options of ``gen3dface generate``."""

    backend: str = "auto"
    """"projection" (embedded default, CPU), "diffusion" (needs weights) or "auto"."""
    views: int | None = None
    """Number of target views around the head (None: 16, or the diffusion model's own count)."""
    resolution: int = 512
    """Working size in pixels of the crop and of the projection views (diffusion views have the model's size)."""
    steps: int = 50
    """DDIM steps of the diffusion backend."""
    guidance: float = 2.0
    """Classifier-free guidance scale of the diffusion backend."""
    seed: int = 0
    """Seed of every random choice."""
    recon: str = "auto"
    """Neural surface reconstruction: "on", "off", or "auto" (on for diffusion, off for projection)."""
    recon_steps: int | None = None
    """NeuS optimisation steps (None: recon's default)."""
    recon_resolution: int | None = None
    """Marching-cubes resolution of recon (None: recon's default)."""
    texture_size: int | None = None
    """Texture size of the recon mesh in pixels (None: recon's default, 2048)."""
    weights: Path | None = None
    """Diffusion model folder (None: look in the models folder)."""
    uv_layout: str = "xatlas"
    """UV layout of the recon mesh: "xatlas" charts, or "template" (the prior's fixed layout)."""
    skip_bad: bool = False
    """With several photos: skip (with a warning) a photo without a usable face instead of failing."""
    shared_expression: bool = False
    """With several photos: fit one expression to all of them (else one per photo)."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise BadInput(None, f"unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})", "usage")
        if self.recon not in RECON_MODES:
            raise BadInput(None, f"unknown recon mode {self.recon!r} (choose from {', '.join(RECON_MODES)})", "usage")
        if self.views is not None and not 1 <= self.views <= 64:
            raise BadInput(None, f"views must be between 1 and 64, got {self.views}", "usage")
        if not 64 <= self.resolution <= 2048:
            raise BadInput(None, f"resolution must be between 64 and 2048, got {self.resolution}", "usage")
        if self.steps < 1:
            raise BadInput(None, f"steps must be ≥ 1, got {self.steps}", "usage")


def _choose_backend(config: GenerateConfig, ctx: RunContext) -> tuple[str, Path | None]:
    """The backend to run and, for diffusion, its weights folder."""
    from weights.discovery import find_weights, folder_problem

    if config.backend == "projection":
        return "projection", None
    weights = Path(config.weights) if config.weights else find_weights(ctx.models_dir)
    if config.backend == "diffusion":
        if weights is None:
            from .errors import ModelMissing

            raise ModelMissing(ctx.models_dir, "no diffusion weights found: pass --weights DIR or put a model folder "
                               "at <models>/multiview/ (see docs/diffusion.md)")
        return "diffusion", weights
    if weights is None:
        ctx.warn("no_diffusion_weights", f"no diffusion weights in {ctx.models_dir}; using the embedded projection "
                 "backend (see docs/diffusion.md to install weights)")
        return "projection", None
    problem = folder_problem(weights)
    if problem:
        ctx.warn("bad_diffusion_weights", f"{problem}; using the embedded projection backend "
                 "(reinstall the model folder, see docs/diffusion.md)")
        return "projection", None
    return "diffusion", weights


class Stages:
    """Announces and times the stages of one run: ``with stages("prior"): ...``."""

    def __init__(self, ctx: RunContext, names: list[str]):
        self.ctx, self.names, self.timings = ctx, names, {}

    @contextmanager
    def __call__(self, name: str):
        self.ctx.check_cancelled()  # a stage boundary is a step boundary
        self.ctx.stage_name = name
        if self.ctx.emit:
            self.ctx.emit(protocol.Stage(name=name, index=self.names.index(name), total=len(self.names)))
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)
            log.info("stage %s: %.2f s", name, self.timings[name])


def generate(photo, output: Path, config: GenerateConfig, ctx: RunContext, overwrite: bool = False) -> dict:
    """Run the whole job; return the manifest written to ``output/result.json``.

    photo: one path or a list of photos of one person (the first is the input view; ``multiphoto``).
    """
    from . import multiphoto, preprocess, prior

    photos = multiphoto.check_photos([photo] if isinstance(photo, (str, Path)) else list(photo))
    run_dir = RunDir(output, overwrite=overwrite)
    run_dir.check()
    with run_dir as tmp:
        backend, weights = _choose_backend(config, ctx)
        use_recon = config.recon == "on" or (config.recon == "auto" and backend == "diffusion")
        stages = Stages(ctx, ["preprocess", "prior", backend] + (["recon"] if use_recon else []))
        # 1. Photo → oriented RGB, 478 landmarks, head crop with matte, input intrinsics.
        #    Several photos: each one; the first usable one is the input view.
        with stages("preprocess"):
            pres = multiphoto.preprocess_all(photos, tmp, preprocess.PreprocessConfig(size=config.resolution), ctx,
                                             skip_bad=config.skip_bad)
            photo, pre = pres[0]
            ctx.preview(tmp / "input" / "crop.png")  # paths in previews are valid while the run lasts
        # 2. Head model fitted to the landmarks (of every photo): mesh in the Blender world + cameras.
        with stages("prior"):
            head, extras = multiphoto.fit_prior(pres, tmp, prior.PriorConfig(), ctx, config.shared_expression)
        # 3. Views all around the head + transforms.json (+ the textured prior for projection).
        with stages(backend):
            outputs = _multiview(backend, weights, pre, head, tmp, config, ctx, extras)
            ctx.preview(tmp / "views" / "view_000.png")
        # 4. Neural surface from the views → textured mesh.
        if use_recon:
            with stages("recon"):
                outputs.update(_recon(tmp, head, config, ctx))
        result = manifest(
            "generate", photo,
            config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            backend=backend, head_model=head.model, recon=use_recon,
            photos=[str(Path(p).resolve()) for p, _ in pres],
            timings=stages.timings, outputs=outputs, warnings=ctx.warnings,
        )
        ctx.check_cancelled()
        final = run_dir.commit(result)
    return {**result, "run_dir": str(final)}


def _multiview(backend, weights, pre, head, run_dir: Path, config: GenerateConfig, ctx: RunContext,
               extras=()) -> dict:
    outputs = {"photo": "input/photo.png", "crop": "input/crop.png", "landmarks": "input/landmarks.json",
               "input_camera": "input/camera.json", "prior": "prior/head.glb", "prior_params": "prior/params.json",
               "views": "views", "transforms": "transforms.json"}
    if backend == "projection":
        from .multiview import projection

        cfg = projection.ProjectionConfig(n_views=config.views or 16, size=config.resolution)
        projection.run(pre.crop, head, run_dir, cfg, ctx, landmarks=pre.landmarks_crop, extras=extras)
        outputs["mesh"] = "mesh/head.glb"
    else:
        from .multiview import diffusion

        cfg = diffusion.DiffusionConfig(n_views=config.views, steps=config.steps, guidance=config.guidance,
                                        seed=config.seed)
        prior = (head.vertices, head.faces, head.camera, getattr(head, "flame_center", None))
        # further photos: extra reference views for a model trained with multi_reference, else a warning
        diffusion.run(pre.crop, prior, run_dir, cfg, ctx, weights, references=[(e.crop, e.camera, e.path) for e in extras])
    return outputs


def _recon(run_dir: Path, head, config: GenerateConfig, ctx: RunContext) -> dict:
    """NeuS on the views → ``mesh/head.glb``; a textured prior from projection moves to ``prior/``."""
    from . import reconstruct

    projected = run_dir / "mesh" / "head.glb"
    outputs = {}
    if projected.exists():
        projected.rename(run_dir / "prior" / "head_textured.glb")
        outputs["prior_textured"] = "prior/head_textured.glb"
    result = reconstruct.run_recon(run_dir / "transforms.json", run_dir / "mesh", ctx,
                                   prior=(head.vertices, head.faces), steps=config.recon_steps, seed=config.seed,
                                   resolution=config.recon_resolution, texture_size=config.texture_size,
                                   uv_layout=config.uv_layout,
                                   prior_uv=None if head.uvs is None else (head.uvs, head.faces_uv))
    outputs.update(mesh=str(Path(result.mesh_glb).relative_to(run_dir)),
                   mesh_obj=str(Path(result.mesh_obj).relative_to(run_dir)))
    return outputs
