"""The training dataset format: one folder per identity, a manifest at the root.

    <root>/manifest.json              format, version, counts, items {id: sha256 of item.json}, skipped
    <root>/<id>/item.json             written last (the item is complete): views, size, input view, sha256 per file
    <root>/<id>/transforms.json       nerfstudio, engine convention (Blender world, OpenGL camera axes),
                                      in the frame of the *estimated* prior: ``input_frame`` is the camera the
                                      engine's prior fitted on the input view's crop; every frame was moved by
                                      the similarity that maps the source camera of the input view onto it
                                      (``alignment``: 4×4, prior world from source world)
    <root>/<id>/views/view_XXX.png    RGBA, straight alpha, all the same size (square)
    <root>/<id>/input/crop.png        the engine's preprocess crop of the input view (RGBA, the matte as alpha)
    <root>/<id>/prior/mesh.npz        vertices float32 [V, 3], faces int32 [F, 3] (the fitted head, estimated)
    <root>/<id>/prior/params.json     the prior stage's parameters (model, coefficients, camera, residual)

The prior is what the engine's own preprocess + prior stages fit on the input view, never
ground truth (Gen3D-Face §4: FLAME estimated from the input during training as at inference).
Items are written under a temporary name and renamed into place, so a folder with
``item.json`` is complete; ``dataset build`` resumes by skipping those.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from recon.cameras import Camera, from_frame

from ..rundir import sha256_file

FORMAT = "gen3dface-dataset"
VERSION = 1
ITEM_FILE = "item.json"
MANIFEST = "manifest.json"


class DatasetError(ValueError):
    """A dataset file is missing or malformed: ``path`` and a one-line ``reason``."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason




@dataclass
class Item:
    """One identity, loaded. views: [N, S, S, 4] uint8; cameras: N; crop: [s, s, 4] uint8;
    input_camera: the crop's estimated camera; vertices [V, 3] float32; faces [F, 3] int64."""

    id: str
    views: np.ndarray
    cameras: list[Camera]
    input_view: int
    crop: np.ndarray
    input_camera: Camera
    vertices: np.ndarray
    faces: np.ndarray


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(path, "expected a JSON object")
    return data


def read_rgba(path: Path) -> np.ndarray:
    """[h, w, 4] uint8 of a PNG (any mode); DatasetError naming the file when it does not decode."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGBA"))
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(path, f"not a readable image ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None


def write_item_record(folder: Path, item_id: str, n_views: int, size: int, input_view: int, source: str) -> dict:
    """Hash every file of the item and write ``item.json`` (the completion mark); returns it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ITEM_FILE)
    record = {"format": FORMAT, "version": VERSION, "id": item_id, "n_views": n_views, "size": size,
              "input_view": input_view, "source": source,
              "sha256": {str(p.relative_to(folder)): sha256_file(p) for p in files}}
    (folder / ITEM_FILE).write_text(json.dumps(record, indent=1))
    return record


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished item (``item.json`` parses and is ours)."""
    try:
        rec = _read_json(folder / ITEM_FILE)
    except DatasetError:
        return False
    return rec.get("format") == FORMAT


def list_items(root: Path) -> list[str]:
    """Ids of the complete items under ``root``, sorted (the manifest's order if there is one)."""
    root = Path(root)
    man = root / MANIFEST
    if man.is_file():
        return sorted(_read_json(man).get("items", {}))
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_complete(p))


def load_item(root: Path, item_id: str, verify: bool = False) -> Item:
    """Read one item; ``verify`` checks every file's sha256 against ``item.json``."""
    folder = Path(root) / item_id
    rec = _read_json(folder / ITEM_FILE)
    if rec.get("format") != FORMAT:
        raise DatasetError(folder / ITEM_FILE, f"not a {FORMAT} item")
    if verify:
        for rel, digest in rec.get("sha256", {}).items():
            if not (folder / rel).is_file() or sha256_file(folder / rel) != digest:
                raise DatasetError(folder / rel, "missing or sha256 differs from item.json")
    meta = _read_json(folder / "transforms.json")
    try:
        cameras = [from_frame(meta, f) for f in meta["frames"]]
        input_camera = from_frame(meta["input_frame"], meta["input_frame"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(folder / "transforms.json", f"bad camera ({exc})") from None
    views = np.stack([read_rgba(folder / f["file_path"]) for f in meta["frames"]])
    crop = read_rgba(folder / "input" / "crop.png")
    try:
        with np.load(folder / "prior" / "mesh.npz") as z:
            vertices, faces = z["vertices"].astype(np.float32), z["faces"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(folder / "prior" / "mesh.npz", f"unreadable ({exc})") from None
    return Item(item_id, views, cameras, int(rec["input_view"]), crop, input_camera, vertices, faces)


def write_manifest(root: Path, items: dict[str, dict], skipped: list[dict], config: dict) -> Path:
    """``<root>/manifest.json``: counts, one sha256 of ``item.json`` per item, the skip report."""
    root = Path(root)
    entries = {k: {"n_views": v["n_views"], "size": v["size"], "source": v["source"],
                   "sha256": sha256_file(root / k / ITEM_FILE)} for k, v in sorted(items.items())}
    manifest = {"format": FORMAT, "version": VERSION,
                "counts": {"items": len(entries), "views": sum(v["n_views"] for v in entries.values()),
                           "skipped": len(skipped)},
                "items": entries, "skipped": skipped, "config": config}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(root / MANIFEST)
    return root / MANIFEST


def read_manifest(root: Path) -> dict:
    """The manifest of a dataset root (DatasetError when missing or not ours)."""
    man = _read_json(Path(root) / MANIFEST)
    if man.get("format") != FORMAT:
        raise DatasetError(Path(root) / MANIFEST, f"not a {FORMAT} manifest")
    return man
