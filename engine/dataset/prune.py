"""``gen3dface dataset prune``: the seed paper's training-data filters, reported, never applied.

1. Janus filter: a CLIP zero-shot classifier between "back of human head" and "human front
   face" on each identity's back views (|azimuth| ≥ ``back_azimuth``); an identity with a back
   view classified as a front face above ``janus_threshold`` is removed (a face on the back of
   the head is the Janus artefact). Needs a local CLIP folder; without one it is skipped.
2. ID-consistency filter: the mean pairwise identity distance over each identity's views
   (dlib by default); of the identities the Janus filter kept, the ``keep`` most consistent
   stay. An identity with fewer than two faces found ranks last.

Writes ``OUT/manifest.json`` (kept, removed with reasons, every score) and
``OUT/contact_sheet.png`` (the removed identities' views, flagged back views framed red).
Nothing in the dataset is changed or deleted.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import EXIT_OK, BadInput
from ..eval import embedders, metrics
from ..eval.runs import load_rgb
from .layout import Identity, load_dataset

log = logging.getLogger(__name__)

JANUS_PROMPTS = ("back of human head", "human front face")


@dataclass(frozen=True)
class PruneConfig:
    """Options of ``gen3dface dataset prune``."""

    clip: Path | None = None
    """Local transformers CLIP folder for the Janus filter (None: that filter is skipped)."""
    janus_threshold: float = 0.5
    """A back view whose probability of "human front face" exceeds this is a Janus view."""
    back_azimuth: float = 135.0
    """Views with |azimuth| ≥ this many degrees (0 = front) are back views."""
    keep: int | None = None
    """Identities kept by the ID-consistency filter, most consistent first (None: all)."""
    face_backend: str = "dlib"
    """Identity backend of the ID-consistency filter ("dlib" or "arcface")."""
    arcface: Path | None = None
    """insightface ArcFace model (.onnx) for the arcface backend."""

    def __post_init__(self):
        if self.keep is not None and self.keep < 0:
            raise BadInput(None, f"--keep must be ≥ 0, got {self.keep}", "usage")
        if not 0.0 <= self.janus_threshold <= 1.0:
            raise BadInput(None, f"--janus-threshold must be in [0, 1], got {self.janus_threshold}", "usage")


def janus_probabilities(clip: embedders.ClipEmbedder, images: list[np.ndarray]) -> np.ndarray:
    """P("human front face") of each image [N] under CLIP's zero-shot softmax over JANUS_PROMPTS."""
    logits = clip.logit_scale() * clip.images(images) @ clip.texts(list(JANUS_PROMPTS)).T  # [N, 2]
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p[:, 1] / p.sum(1)


def _score(identity: Identity, face, clip, config: PruneConfig) -> dict:
    images = [load_rgb(v.path) for v in identity.views]
    vectors = []
    for rgb in images:
        faces = face.faces(rgb)
        if faces:
            vectors.append(faces[0].vector)
    pairs = metrics.pairwise(vectors, face.distance)
    out = {"identity": identity.name, "path": str(identity.root), "views": len(images), "faces_found": len(vectors),
           "id_mean_distance": round(float(np.mean(pairs)), 4) if pairs else None, "janus_views": []}
    back = [i for i, v in enumerate(identity.views) if abs(v.azimuth) >= config.back_azimuth]
    if clip is not None and back:
        probs = janus_probabilities(clip, [images[i] for i in back])
        out["back_views"] = {identity.views[i].path.name: round(float(p), 4) for i, p in zip(back, probs)}
        out["janus_views"] = [identity.views[i].path.name for i, p in zip(back, probs) if p > config.janus_threshold]
    return out


def prune(dataset: Path, config: PruneConfig) -> dict:
    """Score every identity and decide what the filters remove; returns the manifest."""
    identities = load_dataset(dataset)
    face = embedders.face_embedder(config.face_backend, config.arcface)
    clip = embedders.ClipEmbedder(config.clip) if config.clip else None
    scores = [_score(ident, face, clip, config) for ident in identities]
    removed: dict[str, list[str]] = {}
    for s in scores:
        if s["janus_views"]:
            views = ", ".join(s["janus_views"])
            removed.setdefault(s["identity"], []).append(f"janus: front face on back view(s) {views}")
    survivors = [s for s in scores if s["identity"] not in removed]
    ranked = sorted(survivors, key=lambda s: (s["id_mean_distance"] is None, s["id_mean_distance"] or 0.0))
    keep = len(ranked) if config.keep is None else config.keep
    for rank, s in enumerate(ranked):
        s["id_rank"] = rank + 1
        if rank >= keep:
            d = s["id_mean_distance"]
            why = f"mean pairwise distance {d}" if d is not None else f"only {s['faces_found']} face(s) found"
            removed.setdefault(s["identity"], []).append(f"id_consistency: rank {rank + 1} of {len(ranked)} ({why})")
    return {"dataset": str(Path(dataset).resolve()), "face_backend": face.name,
            "janus": "on" if clip is not None else "skipped (no --clip)",
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "kept": [s["identity"] for s in scores if s["identity"] not in removed],
            "removed": [{"identity": k, "reasons": v} for k, v in removed.items()], "scores": scores}


def contact_sheet(manifest: dict, path: Path, tile: int = 128, per_row: int = 8) -> Path:
    """One row per removed identity: its first ``per_row`` views, Janus views framed red, and the reasons."""
    rows = [r for r in manifest["removed"]]
    by_name = {s["identity"]: s for s in manifest["scores"]}
    label = 28
    sheet = Image.new("RGB", (max(1, per_row) * tile, max(1, len(rows)) * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    if not rows:
        draw.text((8, 8), "nothing removed", fill="black")
    for r, row in enumerate(rows):
        s = by_name[row["identity"]]
        y = r * (tile + label)
        draw.text((4, y + 2), f"{row['identity']}: {'; '.join(row['reasons'])}"[:150], fill="black")
        views = json.loads((Path(s["path"]) / "transforms.json").read_text())["frames"][:per_row]
        for c, frame in enumerate(views):
            view = Path(s["path"]) / frame["file_path"]
            thumb = Image.fromarray(load_rgb(view)).resize((tile, tile), Image.BILINEAR)
            sheet.paste(thumb, (c * tile, y + label))
            if view.name in s["janus_views"]:
                draw.rectangle([c * tile, y + label, (c + 1) * tile - 1, y + label + tile - 1], outline="red", width=4)
    path = Path(path)
    sheet.save(path)
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("dataset", help="training dataset tools (docs/dataset.md)")
    tools = p.add_subparsers(dest="dataset_command", required=True, parser_class=type(p))
    q = tools.add_parser("prune", help="Janus (CLIP) and ID-consistency filters → manifest + contact sheet; "
                         "deletes nothing")
    q.add_argument("dataset", type=Path, help="folder of identity folders")
    q.add_argument("-o", "--output", type=Path, default=Path("gen3dface-prune"),
                   help="folder for manifest.json and contact_sheet.png (default gen3dface-prune)")
    q.add_argument("--clip", type=Path, default=None, help="local transformers CLIP folder (Janus filter)")
    q.add_argument("--janus-threshold", type=float, default=0.5)
    q.add_argument("--back-azimuth", type=float, default=135.0, help="|azimuth| of back views in degrees")
    q.add_argument("--keep", type=int, default=None, help="identities kept by the ID-consistency filter")
    q.add_argument("--face-backend", default="dlib", choices=embedders.FACE_BACKENDS)
    q.add_argument("--arcface", type=Path, default=None, help="insightface ArcFace model (.onnx)")
    q.add_argument("-v", "--verbose", action="count", default=0)
    q.set_defaults(handler=main)


def main(args) -> int:
    config = PruneConfig(clip=args.clip, janus_threshold=args.janus_threshold, back_azimuth=args.back_azimuth,
                         keep=args.keep, face_backend=args.face_backend, arcface=args.arcface)
    manifest = prune(args.dataset, config)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
        contact_sheet(manifest, out / "contact_sheet.png")
    except OSError as exc:
        raise BadInput(out, f"cannot write the prune outputs ({exc.strerror or exc})", "output_not_writable") from None
    print(f"{len(manifest['kept'])} kept, {len(manifest['removed'])} removed (janus {manifest['janus']}); "
          f"nothing deleted; see {out / 'manifest.json'}")
    for row in manifest["removed"]:
        print(f"  {row['identity']}: {'; '.join(row['reasons'])}")
    return EXIT_OK
