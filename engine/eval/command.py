"""``gen3dface eval RUNS...``: the seed paper's measures (§4, Tables 1–2) over run directories.

Per run and overall: views where a face is found, by azimuth; I2O identity (input photo
against every view) and O2O identity (every pair of views) as distances and as the share
under the match threshold; CLIP similarity of input and views (``--clip DIR``); FID of all
views against ``--fid-reference DIR`` (``--inception FILE``); and against ground-truth views
where a run has them, SSIM, PSNR, LPIPS (``--lpips FILE``) and Re-ID (match rate and mean
distance at the threshold). Writes ``OUT/eval.json`` and ``OUT/identity_vs_azimuth.png``
and prints a table. A bad or incomplete run is reported by name and skipped; exit 2 then.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from . import embedders, metrics
from .runs import Run, load_rgb, load_run

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``gen3dface eval``."""

    face_backend: str = "dlib"
    """Identity backend: "dlib" (offline default) or "arcface" (needs ``arcface``)."""
    arcface: Path | None = None
    """insightface recognition model (.onnx) for the arcface backend."""
    threshold: float | None = None
    """Identity match threshold on the backend's distance (None: the backend's, dlib 0.6)."""
    clip: Path | None = None
    """Local transformers CLIP folder: CLIP similarity of input and views when given."""
    inception: Path | None = None
    """TorchScript/ONNX FID Inception: FID against ``fid_reference`` when both are given."""
    fid_reference: Path | None = None
    """Folder of reference images (e.g. real faces) for FID."""
    lpips: Path | None = None
    """TorchScript LPIPS model: LPIPS against ground-truth views when given."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="identity (I2O, O2O), CLIP, FID, SSIM/PSNR/LPIPS/Re-ID of run directories")
    p.add_argument("runs", type=Path, nargs="+", help="run directories written by generate / demo / batch")
    p.add_argument("-o", "--output", type=Path, default=Path("gen3dface-eval"),
                   help="folder for eval.json and identity_vs_azimuth.png (default gen3dface-eval)")
    p.add_argument("--face-backend", default="dlib", choices=embedders.FACE_BACKENDS)
    p.add_argument("--arcface", type=Path, default=None, help="insightface ArcFace model (.onnx)")
    p.add_argument("--threshold", type=float, default=None, help="identity match threshold (default: dlib 0.6)")
    p.add_argument("--clip", type=Path, default=None, help="local transformers CLIP folder")
    p.add_argument("--inception", type=Path, default=None, help="FID Inception as TorchScript (.pt) or ONNX")
    p.add_argument("--fid-reference", type=Path, default=None, help="folder of reference images for FID")
    p.add_argument("--lpips", type=Path, default=None, help="LPIPS as TorchScript (.pt)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    p.set_defaults(handler=main)


class Models:
    """Every model eval needs, loaded once for all runs."""

    def __init__(self, config: EvalConfig, face=None):
        self.face = face or embedders.face_embedder(config.face_backend, config.arcface)
        self.threshold = config.threshold if config.threshold is not None else self.face.threshold
        self.clip = embedders.ClipEmbedder(config.clip) if config.clip else None
        want_fid = config.inception is not None or config.fid_reference is not None
        if want_fid and (config.inception is None or config.fid_reference is None):
            raise BadInput(None, "FID needs both --inception MODEL and --fid-reference DIR", "usage")
        self.inception = embedders.InceptionFeatures(config.inception) if want_fid else None
        self.lpips = metrics.Lpips(config.lpips) if config.lpips else None


def _face_vector(models: Models, rgb: np.ndarray):
    faces = models.face.faces(rgb)
    return faces[0].vector if faces else None


def evaluate_run(run: Run, models: Models) -> tuple[dict, list[np.ndarray]]:
    """The figures of one run, and its view images (for FID) [H, W, 3] uint8."""
    dist, thr = models.face.distance, models.threshold
    photo = load_rgb(run.photo)
    ref = _face_vector(models, photo)
    images, vectors, per_view, i2o = [], [], [], []
    gt = {"ssim": [], "psnr": [], "lpips": [], "reid": []}
    for view in run.views:
        rgb = load_rgb(view.path)
        images.append(rgb)
        v = _face_vector(models, rgb)
        row = {"view": view.path.name, "azimuth": round(view.azimuth, 2), "elevation": round(view.elevation, 2),
               "face": v is not None, "i2o_distance": None}
        if v is not None:
            vectors.append(v)
            if ref is not None:
                row["i2o_distance"] = round(dist(ref, v), 4)
                i2o.append(dist(ref, v))
        if view.ground_truth is not None:
            _ground_truth(view.ground_truth, rgb, v, models, gt)
        per_view.append(row)
    out = {"run": str(run.root), "backend": run.backend, "input_face": ref is not None, "views": len(run.views),
           "faces_found": len(vectors), "i2o": metrics.identity_summary(i2o, thr),
           "o2o": metrics.identity_summary(metrics.pairwise(vectors, dist), thr), "by_view": per_view}
    if models.clip is not None:
        sims = models.clip.images(images) @ models.clip.images([photo])[0]
        out["clip_similarity"] = round(float(sims.mean()), 4)
    if gt["ssim"]:
        out["ground_truth"] = _gt_summary(gt, thr)
    return out, images


def _ground_truth(path: Path, rgb: np.ndarray, v, models: Models, gt: dict) -> None:
    """SSIM, PSNR, LPIPS and the Re-ID distance of one view against its ground truth."""
    real = load_rgb(path)
    if real.shape != rgb.shape:
        raise BadInput(path, f"ground truth is {real.shape[1]}×{real.shape[0]}, the view {rgb.shape[1]}×{rgb.shape[0]}",
                       "bad_run")
    gt["ssim"].append(metrics.ssim(rgb, real))
    gt["psnr"].append(metrics.psnr(rgb, real))
    if models.lpips is not None:
        gt["lpips"].append(models.lpips(rgb, real))
    u = _face_vector(models, real)
    if u is not None:  # a view without a face where the truth has one is a Re-ID miss
        gt["reid"].append(models.face.distance(u, v) if v is not None else float("inf"))


def _gt_summary(gt: dict, thr: float) -> dict:
    finite = [d for d in gt["reid"] if np.isfinite(d)]
    psnr = [p for p in gt["psnr"] if np.isfinite(p)]
    return {"n": len(gt["ssim"]), "ssim": round(float(np.mean(gt["ssim"])), 4),
            "psnr": round(float(np.mean(psnr)), 3) if psnr else None,
            "lpips": round(float(np.mean(gt["lpips"])), 4) if gt["lpips"] else None,
            "reid": {"n": len(gt["reid"]), "match_rate": round(float(np.mean([d < thr for d in gt["reid"]])), 4)
                     if gt["reid"] else None, "mean_distance": round(float(np.mean(finite)), 4) if finite else None}}


def _by_azimuth(results: list[dict]) -> list[dict]:
    """Views of every run pooled by azimuth: faces found and mean I2O distance."""
    bins: dict[float, list[dict]] = {}
    for r in results:
        for row in r["by_view"]:
            bins.setdefault(row["azimuth"], []).append(row)
    out = []
    for az in sorted(bins):
        rows = bins[az]
        d = [x["i2o_distance"] for x in rows if x["i2o_distance"] is not None]
        out.append({"azimuth": az, "views": len(rows), "faces_found": sum(x["face"] for x in rows),
                    "i2o_mean": round(float(np.mean(d)), 4) if d else None})
    return out


def evaluate(run_dirs: list[Path], config: EvalConfig, models: Models | None = None) -> dict:
    """The report: per run, overall, by azimuth, and the runs that could not be read (by name).

    models: already loaded models for ``config`` (None: load them here).
    """
    runs, errors = [], []
    for root in run_dirs:
        try:
            runs.append(load_run(root))
        except BadInput as exc:
            errors.append({"run": str(root), "error": exc.message})
    models = models or Models(config)
    results, images, i2o, o2o = [], [], [], []
    for run in runs:
        try:
            result, views = evaluate_run(run, models)
        except BadInput as exc:
            errors.append({"run": str(run.root), "error": exc.message})
            continue
        results.append(result)
        images += views
        i2o += [row["i2o_distance"] for row in result["by_view"] if row["i2o_distance"] is not None]
        o2o.append(result["o2o"])
    n_views = sum(r["views"] for r in results)
    overall = {"runs": len(results), "views": n_views, "faces_found": sum(r["faces_found"] for r in results),
               "i2o": metrics.identity_summary(i2o, models.threshold),
               "o2o_mean": round(float(np.mean([o["mean"] for o in o2o if o["mean"] is not None])), 4)
               if any(o["mean"] is not None for o in o2o) else None}
    clip = [r["clip_similarity"] for r in results if "clip_similarity" in r]
    if clip:
        overall["clip_similarity"] = round(float(np.mean(clip)), 4)
    if models.inception is not None and images:
        overall["fid"] = _fid(models, images, config.fid_reference)
    return {"face_backend": models.face.name, "threshold": models.threshold,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "overall": overall, "by_azimuth": _by_azimuth(results), "runs": results, "errors": errors}


def _fid(models: Models, images: list[np.ndarray], folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(folder, "FID reference folder not found", "not_found")
    refs = [load_rgb(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(refs) < 2 or len(images) < 2:
        raise BadInput(folder, f"FID needs at least 2 images on each side ({len(refs)} reference, "
                       f"{len(images)} views)", "bad_input")
    return {"value": round(metrics.fid(models.inception(images), models.inception(refs)), 3),
            "views": len(images), "reference_images": len(refs)}


def _fmt(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(report: dict) -> str:
    """The report as text: one row per run and overall, then faces found and I2O by azimuth."""
    lines = [f"identity backend {report['face_backend']}, match = distance < {report['threshold']}",
             f"{'run':<28} {'faces':>7} {'I2O mean':>9} {'I2O <thr':>9} {'O2O mean':>9} {'O2O <thr':>9} "
             f"{'CLIP':>6} {'SSIM':>6} {'PSNR':>6} {'Re-ID':>6}"]
    for r in report["runs"]:
        gt = r.get("ground_truth") or {}
        lines.append(f"{Path(r['run']).name[:28]:<28} {r['faces_found']:>3}/{r['views']:<3} "
                     f"{_fmt(r['i2o']['mean']):>9} {_fmt(r['i2o']['match_rate'], 2):>9} {_fmt(r['o2o']['mean']):>9} "
                     f"{_fmt(r['o2o']['match_rate'], 2):>9} {_fmt(r.get('clip_similarity')):>6} "
                     f"{_fmt(gt.get('ssim')):>6} {_fmt(gt.get('psnr'), 1):>6} "
                     f"{_fmt((gt.get('reid') or {}).get('match_rate'), 2):>6}")
    o = report["overall"]
    lines.append(f"{'overall':<28} {o['faces_found']:>3}/{o['views']:<3} {_fmt(o['i2o']['mean']):>9} "
                 f"{_fmt(o['i2o']['match_rate'], 2):>9} {_fmt(o['o2o_mean']):>9}"
                 + (f"   FID {o['fid']['value']:.2f}" if "fid" in o else ""))
    lines.append("azimuth  faces  I2O mean")
    lines += [f"{b['azimuth']:>7.1f}  {b['faces_found']:>2}/{b['views']:<2}  {_fmt(b['i2o_mean']):>8}"
              for b in report["by_azimuth"]]
    lines += [f"not evaluated: {e['error']}" for e in report["errors"]]
    return "\n".join(lines)


def main(args) -> int:
    """CLI handler: evaluate, write eval.json and the plot, print the table; exit 2 if a run was bad."""
    from .plot import identity_plot

    config = EvalConfig(face_backend=args.face_backend, arcface=args.arcface, threshold=args.threshold,
                        clip=args.clip, inception=args.inception, fid_reference=args.fid_reference, lpips=args.lpips)
    report = evaluate(args.runs, config)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, indent=1))
        identity_plot(report, out / "identity_vs_azimuth.png")
    except OSError as exc:
        raise BadInput(out, f"cannot write the eval outputs ({exc.strerror or exc})", "output_not_writable") from None
    print(table(report))
    for e in report["errors"]:
        print(f"gen3dface: {e['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if report["errors"] else EXIT_OK

