"""Known checkpoints: names, expected files, digests where known, licence, where to get them.

Nothing here downloads: the user fetches the file, a converter turns it into a model folder.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Checkpoint:
    """One public checkpoint."""

    name: str
    files: tuple[str, ...]
    """File names as published."""
    licence: str
    source: str
    """Where to get it (a page, not fetched by us)."""
    converter: str | None
    """``python -m <converter> FILE OUT`` makes a model folder; None: used as is."""
    sha256: dict | None = None
    """Digest per file where known (None: not published; verified after conversion instead)."""
    note: str = ""


KNOWN: dict[str, Checkpoint] = {c.name: c for c in (
    Checkpoint("syncdreamer", ("syncdreamer-pretrain.ckpt",), "MIT",
               "https://huggingface.co/liuyuan-pal/SyncDreamer (ckpt/syncdreamer-pretrain.ckpt)",
               "weights.convert_syncdreamer", note="objects, its own 16 views at elevation 30° (conventions.json)"),
    Checkpoint("morphable-facescape", ("*.ckpt",), "MIT",
               "https://github.com/xiyichen/morphablediffusion (docs/data.md: pretrained face model)",
               "weights.convert_morphable", note="FaceScape faces, its own 16 front-hemisphere views (conventions.json)"),
    Checkpoint("clip-vit-large-patch14", ("config.json", "model.safetensors"), "MIT",
               "https://huggingface.co/openai/clip-vit-large-patch14",
               None, note="copy the vision model into <model folder>/image_encoder/"),
)}


def describe(name: str) -> str:
    """One line: where to get ``name`` and how to convert it."""
    c = KNOWN[name]
    how = f"; convert: python -m {c.converter} FILE OUT" if c.converter else ""
    return f"{c.name}: {', '.join(c.files)} from {c.source} ({c.licence}){how}"
