"""The "diffusion" multi-view backend: joint DDIM over N views (Gen3D-Face §3.2).

Entry points for the engine: ``DiffusionConfig``, ``find_weights``, ``load_pipeline``,
``run`` and ``save_pretrained`` (tests write tiny model folders with it). The model needs
a converted checkpoint folder (``weights/convert_syncdreamer.py`` or
``weights/convert_morphable.py``) and, for practical speed, a CUDA GPU.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from engine.errors import BadInput, ModelMissing
from engine.multiview.layouts import get_layout
from engine.multiview.views import write_views
from weights.safeload import WeightsError

from weights.discovery import find_weights

from .folder import load_folder, save_pretrained
from .frames import CheckpointFrame
from .pipeline import MultiViewOutput, MultiViewPipeline

log = logging.getLogger(__name__)

__all__ = ["DiffusionConfig", "find_weights", "load_pipeline", "run", "save_pretrained",
           "MultiViewPipeline", "MultiViewOutput", "WHERE_TO_GET"]

#: Where a user gets weights (the message of exit code 3).
WHERE_TO_GET = ("convert a checkpoint once with `python -m weights.convert_syncdreamer CKPT OUT` or "
                "`python -m weights.convert_morphable CKPT OUT` (see docs/diffusion.md; "
                "SyncDreamer: huggingface.co/liuyuan-pal/SyncDreamer) and put OUT in the models folder as 'multiview'")


@dataclass(frozen=True)
class DiffusionConfig:
    """Settings of one diffusion multi-view run."""

    n_views: int | None = None
    """Target views generated jointly (None: the model's own count; must match it when it has a spatial volume)."""
    size: int | None = None
    """Output view size in pixels (None: the model's image size; must match it)."""
    steps: int = 50
    """DDIM steps (Morphable Diffusion / Gen3D-Face: 50)."""
    guidance: float = 2.0
    """Classifier-free guidance scale (Morphable Diffusion: 2.0); 1.0 disables it (half the compute)."""
    seed: int = 0
    """Seed of the initial noise."""
    layout: str | None = None
    """Target-view layout of our own models (engine/multiview/layouts.py; None: gen3dface). A converted
    checkpoint always uses its own cameras (conventions.json); naming another layout is an error."""
    views_per_chunk: int = 4
    """Views processed at once by the per-view parts (encoder, frustum nets, VAE decode)."""
    dtype: str = "auto"
    """auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."""
    attention_slice: int = 0
    """Queries per attention call (0: no slicing); bounds joint-attention memory."""
    alpha: str = "mesh"
    """Alpha of the views: mesh (prior silhouette, dilated), background (non-white) or both."""

    def __post_init__(self):
        if (self.n_views is not None and self.n_views < 1) or self.steps < 1 or self.views_per_chunk < 1:
            raise ValueError("n_views, steps and views_per_chunk must be ≥ 1")
        if self.dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"dtype must be auto|fp32|fp16|bf16, got {self.dtype!r}")
        if self.alpha not in ("mesh", "background", "both"):
            raise ValueError(f"alpha must be mesh|background|both, got {self.alpha!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "DiffusionConfig":
        """Unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown diffusion settings: {', '.join(unknown)}")
        return cls(**data)


def resolve_dtype(name: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """The torch dtype for a config name on ``device`` (half precision only on CUDA)."""
    if isinstance(name, torch.dtype):
        return name
    dev = torch.device(device)
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    return table[name]


def load_pipeline(weights_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto") -> MultiViewPipeline:
    """Verify and load a model folder; ``ModelMissing`` (exit 3) naming the bad file otherwise."""
    try:
        return load_folder(weights_dir, device=device, dtype=resolve_dtype(dtype, device))
    except WeightsError as exc:
        raise ModelMissing(exc.path, f"{exc.reason}; {WHERE_TO_GET}") from None


def _check_prior(run_dir: Path, prior) -> tuple[np.ndarray, np.ndarray, object, np.ndarray | None]:
    """(vertices, faces, camera[, flame_center]): flame_center is FLAME's template centre in its native
    frame when the prior is FLAME (families that place FLAME by its own origin need it)."""
    try:
        vertices, faces, camera, *rest = prior
    except (TypeError, ValueError):
        raise BadInput(run_dir / "prior", "prior must be (vertices, faces, camera[, flame_center])") from None
    center = None if not rest or rest[0] is None else np.asarray(rest[0], dtype=np.float64).reshape(3)
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), camera, center


def _target_cameras(pipe: MultiViewPipeline, frame: CheckpointFrame, config: DiffusionConfig, weights_dir) -> list:
    """The target views in the checkpoint's frame: its own (explicit layouts) or our 360° layout."""
    conv = pipe.conventions
    where = Path(weights_dir) / "conventions.json"
    if conv.layout == "explicit":
        if config.layout not in (None, conv.family):
            raise BadInput(where, f"a {conv.family} checkpoint renders its own {conv.n_views} views; layout {config.layout!r} is not supported")
        if config.n_views not in (None, conv.n_views):
            raise BadInput(where, f"a {conv.family} checkpoint renders {conv.n_views} views, config asks {config.n_views}")
        return frame.checkpoint_cameras()
    world = get_layout(config.layout or "gen3dface", config.n_views).cameras(config.size)
    return [frame.camera_to_checkpoint(c) for c in world]


def run(crop_rgba, prior, run_dir: Path, config: DiffusionConfig, ctx, weights_dir: str | Path | None = None,
        references: list | None = None) -> Path:
    """Generate ``config.n_views`` views around the head; write views/*.png + transforms.json.

    crop_rgba: [h, w, 4] uint8 (or float in [0, 1]) square crop; prior: (vertices [V, 3],
    faces [F, 3], the crop's ``Camera``); references: further photos of the person as
    [(crop, Camera in the world, path)] (used by models trained with multi_reference, else a
    warning). Returns the path of transforms.json.
    """
    run_dir = Path(run_dir)
    vertices, faces, camera, flame_center = _check_prior(run_dir, prior)
    if weights_dir is None:
        weights_dir = find_weights(ctx.models_dir)
        if weights_dir is None:
            raise ModelMissing(ctx.models_dir or "models folder", f"no multi-view model folder found; {WHERE_TO_GET}")
    key = ("diffusion", str(Path(weights_dir).resolve()), str(ctx.device), str(config.dtype))
    load = lambda: load_pipeline(weights_dir, ctx.device, config.dtype)  # noqa: E731
    pipe = ctx.cached(key, load) if hasattr(ctx, "cached") else load()  # batch: loaded once per process
    if pipe.conventions.layout == "gen3dface":
        config = replace(config, n_views=config.n_views or pipe.conditioner.config.n_views)
    config = replace(config, size=config.size or pipe.image_size)
    if pipe.image_size != config.size:
        raise BadInput(Path(weights_dir) / "model_index.json", f"model makes {pipe.image_size}px views, config asks {config.size}px")
    if config.attention_slice:
        pipe.enable_attention_slicing(config.attention_slice)
    # 1 place for frames: the network sees the checkpoint's frame; what is written is in the world
    frame = CheckpointFrame(pipe.conventions, flame_center)
    cameras = _target_cameras(pipe, frame, config, weights_dir)
    generator = torch.Generator("cpu").manual_seed(config.seed)

    def on_step(p, i, t, kwargs):
        ctx.progress(i + 1, config.steps, f"denoising step {i + 1}/{config.steps}")  # also the cancel point
        return kwargs

    try:
        pipe.check_inputs(crop_rgba, vertices, faces, cameras)
    except ValueError as exc:
        bad = run_dir / ("input/crop.png" if "crop" in str(exc) else "prior")
        raise BadInput(bad, str(exc)) from None
    input_ck, vertices_ck = frame.camera_to_checkpoint(camera), frame.points_to_checkpoint(vertices)
    refs = _references(pipe, references or [], ctx, weights_dir)
    identity = _identity(pipe, crop_rgba, ctx)
    out = pipe(crop_rgba, input_ck, vertices_ck, faces, cameras, num_inference_steps=config.steps,
               guidance_scale=config.guidance, generator=generator, identity=identity,
               references=[(c, frame.camera_to_checkpoint(cam)) for c, cam, _ in refs],
               views_per_chunk=config.views_per_chunk, alpha=config.alpha, callback_on_step_end=on_step)
    conv = pipe.conventions
    extra = {"backend": "diffusion", "family": conv.family,
             "layout": conv.family if conv.layout == "explicit" else (config.layout or "gen3dface"),
             "steps": config.steps, "seed": config.seed, "guidance": config.guidance, "eta": conv.eta,
             "weights": str(weights_dir), "references": [str(p) for _, _, p in refs]}
    world = [frame.camera_to_world(c) for c in out.cameras]
    return write_views(run_dir, list(out.images), world, input_camera=camera, extra=extra)


def _references(pipe: MultiViewPipeline, references: list, ctx, weights_dir) -> list:
    """The further photos this model takes: up to its ``n_references`` (conditioner/config.json); a
    warning in result.json for the ones it does not use."""
    n = pipe.conditioner.config.n_references
    if references and not n:
        ctx.warn("extra_photos_unused", f"the diffusion model {weights_dir} was not trained with several reference "
                 f"photos (no multi_reference); using the first and not {', '.join(str(p) for *_, p in references)}")
    elif len(references) > n:
        ctx.warn("extra_photos_unused", f"the diffusion model {weights_dir} was trained with {n} reference photo(s) "
                 f"besides the input; not using {', '.join(str(p) for *_, p in references[n:])}")
    return list(references[:n])


def _identity(pipe: MultiViewPipeline, crop_rgba, ctx) -> np.ndarray | None:
    """The input's face descriptor when the model has the identity token (None: none, or no face found)."""
    if not pipe.conditioner.config.identity_dim:
        return None
    from .identity import embed_crop

    arr = np.asarray(crop_rgba)
    vector = embed_crop(arr if arr.dtype == np.uint8 else (arr * 255 + 0.5).clip(0, 255).astype(np.uint8))
    if vector is None:
        ctx.warn("identity_no_face", "dlib found no face in the input crop: the identity token carries no identity")
    elif vector.shape[0] != pipe.conditioner.config.identity_dim:
        raise ModelMissing(None, f"the model's identity token takes {pipe.conditioner.config.identity_dim}-d "
                           f"embeddings, dlib gives {vector.shape[0]}")
    return vector
