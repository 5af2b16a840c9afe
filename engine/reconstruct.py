"""The recon stage inside the engine: ``recon.api`` with engine errors, progress and cancel.

``recon`` knows nothing of the engine (docs/architecture.md: arrows one way); this adapter maps its
callbacks onto the run context and its errors onto the engine's exit codes. Used by
``generate --recon`` and by ``gen3dface recon``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .context import RunContext
from .errors import BadInput, Cancelled, Gen3DError
from .rundir import RunDir, manifest


class ReconFailed(Gen3DError):
    """The optimisation failed (e.g. went NaN): exit 1 with a clear one-line message."""

    def __init__(self, reason: str):
        super().__init__(None, reason, "recon_failed")


def run_recon(transforms: Path, out_dir: Path, ctx: RunContext, prior=None, steps: int | None = None,
              resolution: int | None = None, seed: int = 0, texture_size: int | None = None, name: str = "head",
              uv_layout: str = "xatlas", prior_uv=None):
    """Reconstruct a textured mesh from ``transforms`` into ``out_dir``; return recon's result."""
    from recon import api
    from recon.errors import ReconCancelled, ReconError, ReconInputError

    overrides = {"steps": steps, "resolution": resolution, "seed": seed, "texture_size": texture_size,
                 "uv_layout": uv_layout}
    config = api.ReconConfig(**{k: v for k, v in overrides.items() if v is not None})
    try:
        return api.reconstruct(transforms, out_dir, config, prior=prior,
                               progress=lambda step, total, message="": ctx.progress(step, total, message),
                               should_stop=lambda: ctx.cancelled, device=ctx.device, name=name, prior_uv=prior_uv)
    except ReconInputError as exc:
        raise BadInput(exc.path, exc.reason, "bad_views") from None
    except ReconCancelled:
        raise Cancelled() from None
    except ReconError as exc:
        raise ReconFailed(f"reconstruction failed: {exc}") from None


def _prior_uv(prior: Path | None):
    """(uvs [V, 2], faces [F, 3]) of a prior mesh file with UVs (one UV per vertex as read), or None."""
    if prior is None:
        return None
    import trimesh

    try:
        mesh = trimesh.load(prior, force="mesh", process=False)
    except Exception:  # noqa: BLE001 - load_prior reports the unreadable file later
        return None
    uv = getattr(getattr(mesh, "visual", None), "uv", None)
    return None if uv is None or len(uv) != len(mesh.vertices) else (uv, mesh.faces)


def recon_command(args, ctx: RunContext) -> dict:
    """``gen3dface recon TRANSFORMS -o OUT``: a run directory holding the mesh and result.json."""
    transforms = Path(args.transforms)
    if not transforms.is_file():
        raise BadInput(transforms, "file not found" if not transforms.exists() else "not a regular file", "not_found")
    prior = None
    if args.prior is not None:
        prior = Path(args.prior)
        if not prior.is_file():
            raise BadInput(prior, "prior mesh not found", "not_found")
    prior_uv = _prior_uv(prior) if args.uv == "template" else None
    if args.uv == "template" and prior_uv is None:
        raise BadInput(prior, "--uv template needs a --prior mesh with UVs", "usage")
    from .pipeline import Stages

    run_dir = RunDir(args.output, overwrite=args.overwrite)
    stages = Stages(ctx, ["recon"])
    with run_dir as tmp:
        with stages("recon"):
            result = run_recon(transforms.resolve(), tmp / "mesh", ctx, prior=prior, steps=args.steps,
                               resolution=args.resolution, seed=args.seed, texture_size=args.texture_size,
                               uv_layout=args.uv, prior_uv=prior_uv)
        outputs = {"mesh": os.path.relpath(result.mesh_glb, tmp), "mesh_obj": os.path.relpath(result.mesh_obj, tmp)}
        done = manifest("recon", transforms,
                        config={"steps": args.steps, "resolution": args.resolution, "seed": args.seed,
                                "texture_size": args.texture_size,
                                "prior": None if prior is None else str(prior)},
                        metrics=result.metrics, timings=stages.timings, outputs=outputs, warnings=ctx.warnings)
        ctx.check_cancelled()
        final = run_dir.commit(done)
    return {**done, "run_dir": str(final)}
