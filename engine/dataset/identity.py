"""The identity embedding of every item, computed once and cached (identity token, seed 000).

    <root>/<id>/prior/identity.json   {"backend": "dlib", "dim": 128, "crop_sha256": …, "face": bool,
                                       "vector": [128 floats] | null}
    <root>/manifest.json  "identity"  {"backend", "dim", "faces": count, "no_face": [ids]}

The embedding is dlib's face descriptor of the item's input crop (``input/crop.png``), the
crop that the model is conditioned on, by the same function as at inference
(``engine.multiview.diffusion.identity.embed_crop``). An entry is recomputed only when it is
missing, unreadable or its crop changed (sha256). No face: ``vector`` null, the token is zero.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from engine.context import RunContext
from engine.multiview.diffusion.identity import BACKEND, IDENTITY_DIM, embed_crop, embedder

from ..rundir import sha256_file
from . import format as fmt

log = logging.getLogger(__name__)

FILE = Path("prior") / "identity.json"


def _cached(folder: Path, crop_sha: str) -> dict | None:
    try:
        entry = json.loads((folder / FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(entry, dict) and entry.get("backend") == BACKEND and entry.get("dim") == IDENTITY_DIM \
        and entry.get("crop_sha256") == crop_sha
    return entry if ok else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def ensure_identities(root: Path, ctx: RunContext | None = None) -> dict:
    """Compute the missing embeddings of ``root``'s items; returns the manifest's ``identity`` section."""
    root = Path(root)
    ids = fmt.list_items(root)
    faces, no_face, computed = None, [], 0
    for k, item_id in enumerate(ids):
        folder = root / item_id
        crop = folder / "input" / "crop.png"
        sha = sha256_file(crop)
        entry = _cached(folder, sha)
        if entry is None:
            faces = faces or embedder()  # dlib loads only when something is missing
            vector = embed_crop(fmt.read_rgba(crop), faces)
            entry = {"backend": BACKEND, "dim": IDENTITY_DIM, "crop_sha256": sha, "face": vector is not None,
                     "vector": None if vector is None else [float(v) for v in vector]}
            _write_json(folder / FILE, entry)
            computed += 1
            if ctx is not None:
                ctx.progress(k + 1, len(ids), f"identity embedding {item_id}")
        if not entry["face"]:
            no_face.append(item_id)
    section = {"backend": BACKEND, "dim": IDENTITY_DIM, "faces": len(ids) - len(no_face), "no_face": no_face}
    man_path = root / fmt.MANIFEST
    if man_path.is_file():
        man = fmt.read_manifest(root)
        if man.get("identity") != section:
            _write_json(man_path, {**man, "identity": section})
    if no_face:
        log.warning("dlib found no face in the input crop of %d item(s) (%s): their identity token is zero",
                    len(no_face), ", ".join(no_face[:5]))
    log.info("identity embeddings: %d computed, %d cached", computed, len(ids) - computed)
    return section


def read_identity(root: Path, item_id: str) -> np.ndarray | None:
    """The cached [128] float32 embedding of ``item_id`` (None: no face); DatasetError when not cached."""
    path = Path(root) / item_id / FILE
    try:
        entry = json.loads(path.read_text())
        vector = entry["vector"]
    except FileNotFoundError:
        raise fmt.DatasetError(path, "no identity embedding: train with identity_token computes them") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fmt.DatasetError(path, f"unreadable identity embedding ({exc})") from None
    if vector is None:
        return None
    v = np.asarray(vector, np.float32)
    if v.shape != (IDENTITY_DIM,):
        raise fmt.DatasetError(path, f"identity embedding has shape {v.shape}, expected ({IDENTITY_DIM},)")
    return v
