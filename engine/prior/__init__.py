"""The prior stage (paper §3.1): a head mesh fitted to the photo, and the input camera.

FLAME when the user installed it (``<models_dir>/FLAME/``), else the built-in open
template (``template.py``), fitted to the crop's mediapipe landmarks (``fit.py``). The head
stays in the Blender world (centred, face toward −Y); the fitted pose is the input camera.

Writes ``out_dir/prior/params.json`` and ``out_dir/prior/head.glb``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recon.cameras import Camera

from ..context import RunContext
from ..errors import BadInput
from ..paths import default_models_dir

if TYPE_CHECKING:  # pragma: no cover
    from ..preprocess.config import Preprocessed

log = logging.getLogger(__name__)

MODELS = ("auto", "flame", "template")


@dataclass(frozen=True)
class PriorConfig:
    """How the head prior is chosen and fitted."""

    model: str = "auto"
    """"auto": FLAME if installed, else the built-in template (with a ``flame_missing``
    warning); "flame": FLAME required (exit 3 when missing); "template": always the template."""
    flame_shape: int = 100
    """FLAME identity components fitted (of 300)."""
    flame_expr: int = 50
    """FLAME expression components fitted (of 100)."""
    iterations: int = 30
    """Levenberg–Marquardt iterations of the joint fit."""
    refine_focal: bool = True
    """Refine the crop's focal length from the landmarks (else keep the preprocess focal)."""
    shape_prior: float = 0.002
    """Minimum weight of ‖shape‖² in the fit (coefficients in standard deviations); the fitter
    raises it to σ̂²/N when the landmarks are noisy (``fit.FitConfig.prior_landmarks``)."""

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"prior model must be one of {MODELS}, got {self.model!r}")
        if self.iterations < 1 or self.flame_shape < 0 or self.flame_expr < 0:
            raise ValueError("prior iterations must be ≥ 1 and FLAME component counts ≥ 0")

    @classmethod
    def from_dict(cls, values: dict) -> "PriorConfig":
        """From a JSON object; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown prior setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass(frozen=True)
class HeadPrior:
    """The fitted head and the camera of the input crop.

    vertices: [V, 3] float32 Blender world; faces: [F, 3] int64 (counter-clockwise outside).
    uvs / faces_uv: a UV layout if the model has one (None: later stages unwrap with xatlas).
    camera: the input camera (crop image, OpenGL axes). model: "flame" | "template".
    params: shape, expr, jaw, rotation, translation, focal, residual_px (JSON-ready).
    flame_center: FLAME's template centre in its native frame [3] (FLAME only): where FLAME's own
    origin lies, for checkpoints that place FLAME by it (weights/conventions.py, Morphable).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None
    faces_uv: np.ndarray | None
    camera: Camera
    model: str
    params: dict
    flame_center: np.ndarray | None = None


def load_model(config: PriorConfig, ctx: RunContext):
    """The head model this run uses (see ``PriorConfig.model``)."""
    from . import flame, template

    models_dir = Path(ctx.models_dir) if ctx.models_dir is not None else default_models_dir()
    if config.model != "template":
        found = flame.find_flame(models_dir)
        if found is not None:
            return flame.load_flame(*found, device=ctx.device, n_shape=config.flame_shape,
                                    n_expr=config.flame_expr)
        if config.model == "flame":
            from ..errors import ModelMissing

            raise ModelMissing(models_dir / "FLAME", "FLAME not found: download FLAME (generic_model.pkl or "
                               f"FLAME 2023) and mediapipe_landmark_embedding.npz from {flame.FLAME_URL} "
                               "into this folder")
        ctx.warn("flame_missing", f"FLAME not found in {models_dir}; using the built-in head. To use FLAME, "
                 f"download it from {flame.FLAME_URL} (with mediapipe_landmark_embedding.npz) and put it in "
                 f"{models_dir / 'FLAME'}/")
    return template.TemplateHead(device=ctx.device)


def _params(fit, model) -> dict:
    cam = fit.camera
    return {
        "model": model.name, "shape": fit.shape.tolist(), "expr": fit.expr.tolist(), "jaw": fit.jaw.tolist(),
        "shape_names": list(getattr(model, "shape_names", [])), "expr_names": list(getattr(model, "expr_names", [])),
        "rotation": np.asarray(fit.rotation).tolist(), "translation": np.asarray(fit.translation).tolist(),
        "focal": fit.focal, "residual_px": None if not np.isfinite(fit.residual_px) else fit.residual_px,
        "diverged": fit.diverged, "fit_seconds": fit.seconds,
        "camera": {"transform_matrix": cam.c2w.tolist(), "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx,
                   "cy": cam.cy, "w": cam.w, "h": cam.h},
    }


def run(pre: "Preprocessed", out_dir: Path, config: PriorConfig, ctx: RunContext) -> HeadPrior:
    """Fit the head prior to ``pre``'s landmarks; write ``out_dir/prior/{params.json, head.glb}``."""
    from recon.export import write_glb

    from .fit import FitConfig, Intrinsics, fit_landmarks

    lm = np.asarray(pre.landmarks_crop, dtype=np.float64)
    if lm.shape != (478, 3):
        raise BadInput(out_dir / "input", f"expected 478 landmarks × 3, got {lm.shape}")
    size = int(pre.crop.shape[0])
    ctx.progress(0, 3, "loading head model")
    model = load_model(config, ctx)
    ctx.progress(1, 3, f"fitting {model.name} to landmarks")
    fit_cfg = FitConfig(iterations=config.iterations, refine_focal=config.refine_focal,
                        shape_prior=config.shape_prior)
    fit = fit_landmarks(model, lm, Intrinsics(float(pre.fx), float(pre.fy), float(pre.cx), float(pre.cy), size),
                        fit_cfg, ctx)
    ctx.progress(2, 3, "writing prior")
    folder = Path(out_dir) / "prior"
    folder.mkdir(parents=True, exist_ok=True)
    params = _params(fit, model)
    faces = np.asarray(model.faces, dtype=np.int64)
    vertices, params["ears"] = shape_ears(model, fit, pre)
    (folder / "params.json").write_text(json.dumps(params, indent=1))
    write_glb(folder / "head.glb", vertices, faces)
    # a model with a fixed UV layout (the template) spares later stages an unwrap per run
    layout = getattr(model, "uv_layout", None)
    uvs, faces_uv = layout() if layout is not None else (None, None)
    ctx.progress(3, 3, "prior done")
    center = getattr(model, "center", None) if model.name == "flame" else None
    center = None if center is None else np.asarray(center.detach().cpu() if hasattr(center, "detach") else center, dtype=np.float64)
    return HeadPrior(vertices, faces, uvs, faces_uv, fit.camera, model.name, params, center)


def shape_ears(model, fit, pre: "Preprocessed") -> tuple[np.ndarray, dict]:
    """The fitted vertices with the ears shaped by the photo's silhouette (``ears.py``), and
    the record for ``params.json["ears"]``. Template only: FLAME's ears are its own fit."""
    if model.name != "template":
        return fit.vertices, {"status": "skipped", "reason": f"{model.name}: its ears come with its shape space"}
    if fit.diverged:
        return fit.vertices, {"status": "skipped", "reason": "the landmark fit diverged"}
    from .ears import fit_ears

    return fit_ears(pre.crop, np.asarray(pre.landmarks_crop, np.float64), fit.vertices, model.faces,
                    model.data.vertices, fit.camera)
