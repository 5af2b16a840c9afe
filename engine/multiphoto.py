"""Several photos of one person in one run (``gen3dface generate a.jpg b.jpg …``).

The first usable photo is the *input view* (its crop, camera and landmarks go where a
single photo's would: ``input/``); the others are preprocessed into ``extra/NN/input/``.
One identity is fitted to all of them (``prior.multifit``): a camera and an expression per
photo (or one shared expression), one shape. The projection backend fuses their colours
(``multiview._fuse``); the diffusion backend gives the others to a model trained with several
reference photos (``multi_reference``) and uses the first only otherwise (a warning).

A photo without a usable face is an error naming it (exit 2, nothing written) or, with
``skip_bad``, a ``photo_skipped`` warning and the rest are used.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .context import RunContext
from .errors import BadInput

log = logging.getLogger(__name__)

#: The most photos one run takes (each costs ~1 s of preprocess and fit on 2 cores).
MAX_PHOTOS = 16
#: Why a further photo may have no face: the views users add (README "Several photos").
NO_FACE_HINT = ("mediapipe finds faces turned up to about 75°, not profiles or the back of the head; "
                "leave such photos out, or pass --skip-bad")


@dataclass(frozen=True)
class ExtraView:
    """A further photo as the projection backend sees it.

    crop: uint8 [S, S, 4] (alpha = matte); camera: its camera on the shared head (``Camera``);
    landmarks: [478, 3] crop pixels; path: the photo.
    """

    crop: np.ndarray
    camera: object
    landmarks: np.ndarray
    path: Path


def check_photos(photos: list[Path]) -> list[Path]:
    """The photos as paths; BadInput (exit 2) for none, too many, or a missing file."""
    photos = [Path(p) for p in photos]
    if not photos:
        raise BadInput(None, "no photo given", "usage")
    if len(photos) > MAX_PHOTOS:
        raise BadInput(photos[MAX_PHOTOS], f"{len(photos)} photos given; at most {MAX_PHOTOS} are used per run "
                       "(choose the best ones)", "too_many_photos")
    for p in photos:
        if not p.is_file():
            raise BadInput(p, "file not found" if not p.exists() else "not a regular file", "not_found")
    return photos


def preprocess_all(photos: list[Path], run_dir: Path, config, ctx: RunContext, skip_bad: bool = False) -> list:
    """``preprocess.run`` on every photo → [(path, Preprocessed)], the input view first.

    The input view writes ``run_dir/input/``; the k-th further one ``run_dir/extra/NN/input/``.
    """
    from . import preprocess

    out = []
    for path in photos:
        ctx.check_cancelled()
        where = run_dir if not out else run_dir / "extra" / f"{len(out):02d}"
        try:
            pre = preprocess.run(path, where, config, ctx)
        except BadInput as exc:
            if exc.code == "no_face" and len(photos) > 1:
                exc = BadInput(exc.path, f"{exc.reason} ({NO_FACE_HINT})", exc.code)
            if not skip_bad:
                raise exc from None
            ctx.warn("photo_skipped", f"{exc.message}; skipped (--skip-bad)")
            continue
        out.append((path, pre))
    if not out:
        raise BadInput(photos[0], "none of the photos has a usable face", "no_face")
    return out


def fit_prior(pres: list, run_dir: Path, config, ctx: RunContext, shared_expression: bool = False):
    """(HeadPrior of the input view, [ExtraView]): one head fitted to every photo.

    One photo: exactly ``prior.run``. Several: ``prior.multifit.fit_many``; ``prior/params.json``
    gains ``photos`` (each photo's path, camera, expression and RMS).
    """
    from . import prior
    from .prior.fit import FitConfig, Intrinsics
    from .prior.multifit import fit_many

    if len(pres) == 1:
        return prior.run(pres[0][1], run_dir, config, ctx), []
    from recon.export import write_glb

    ctx.progress(0, 3, "loading head model")
    model = prior.load_model(config, ctx)
    ctx.progress(1, 3, f"fitting {model.name} to {len(pres)} photos")
    intr = [Intrinsics(float(p.fx), float(p.fy), float(p.cx), float(p.cy), int(p.crop.shape[0])) for _, p in pres]
    fit_cfg = FitConfig(iterations=config.iterations, refine_focal=config.refine_focal,
                        shape_prior=config.shape_prior)
    lms = [np.asarray(p.landmarks_crop, np.float64) for _, p in pres]
    multi = fit_many(model, lms, intr, fit_cfg, ctx, shared_expression=shared_expression)
    ctx.progress(2, 3, "writing prior")
    folder = Path(run_dir) / "prior"
    folder.mkdir(parents=True, exist_ok=True)
    params = prior._params(multi.fits[0], model)
    params["photos"] = [{"path": str(path), **{k: v for k, v in prior._params(f, model).items()
                                                if k in ("camera", "expr", "jaw", "residual_px", "diverged")}}
                        for (path, _), f in zip(pres, multi.fits)]
    params["shared_expression"] = shared_expression
    faces = np.asarray(model.faces, dtype=np.int64)
    first = multi.fits[0]
    vertices, params["ears"] = shape_ears(model, multi.fits, [p for _, p in pres])
    (folder / "params.json").write_text(json.dumps(params, indent=1))
    write_glb(folder / "head.glb", vertices, faces)
    layout = getattr(model, "uv_layout", None)
    uvs, faces_uv = layout() if layout is not None else (None, None)
    head = prior.HeadPrior(vertices, faces, uvs, faces_uv, first.camera, model.name, params)
    extras = []
    for (path, pre), f in zip(pres[1:], multi.fits[1:]):
        if f.diverged:
            ctx.warn("photo_unfitted", f"{path}: the head could not be fitted to this photo; it is not used")
            continue
        extras.append(ExtraView(pre.crop, f.camera, np.asarray(pre.landmarks_crop, np.float64), Path(path)))
    ctx.progress(3, 3, "prior done")
    return head, extras


def shape_ears(model, fits: list, pres: list) -> tuple[np.ndarray, dict]:
    """The input view's head with each ear shaped by the most frontal photo that shows it.

    ``prior.shape_ears`` runs on the photos in order of their head yaw (it reads ears only
    from near-frontal ones); per side the first "fitted" record wins, else the most frontal
    photo's record stands. The record is ``prior.shape_ears``'s with ``photo`` (the index in
    the run's photo order) at the top and on each fitted side.
    """
    from . import prior
    from .prior.ears import deform, head_angles

    order = sorted((k for k, f in enumerate(fits) if not f.diverged),
                   key=lambda k: abs(head_angles(fits[k].camera)[0]))
    if not order:
        return prior.shape_ears(model, fits[0], pres[0])
    chosen, record = {}, None
    for k in order:
        _, rec = prior.shape_ears(model, fits[k], pres[k])
        if record is None:
            record = {**rec, "photo": k}
        if rec.get("status") == "skipped":
            return fits[0].vertices, record
        for side in ("left", "right"):
            if side not in chosen and rec[side]["status"] == "fitted":
                chosen[side] = {**rec[side], "photo": k}
        if len(chosen) == 2:
            break
    record.update(chosen)
    vertices = fits[0].vertices
    if chosen:
        vertices = deform(vertices, model.data.vertices,
                          {s: (r["protrusion_deg"], r["scale"]) for s, r in chosen.items()})
    return vertices, record
