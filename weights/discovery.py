"""Finding an installed multi-view model folder, cheaply (standard library only).

The engine asks this on every run with ``--backend auto``; it must not import torch or
diffusers just to learn that no model is installed.
"""
from __future__ import annotations

import json
from pathlib import Path

#: ``model_index.json["format"]`` of a Gen3D Face multi-view model folder.
FORMAT = "gen3dface-multiview"


def find_weights(models_dir: str | Path | None) -> Path | None:
    """A model folder under ``models_dir``: ``multiview/`` first, then ``gen3dface-multiview/``,
    the folder itself, then any sub-folder whose ``model_index.json`` has our format. None if none."""
    if models_dir is None:
        return None
    root = Path(models_dir).expanduser()
    candidates = [root / "multiview", root / "gen3dface-multiview", root]
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    for folder in candidates:
        index = folder / "model_index.json"
        try:
            if index.is_file() and json.loads(index.read_text()).get("format") == FORMAT:
                return folder
        except (OSError, ValueError):
            continue
    return None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header and size, or None (no tensor data is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "not a safetensors file (too short)"
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                return "not a safetensors file (bad header length)"
            header = json.loads(f.read(n))
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"not a safetensors file (header: {exc})"
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError):
        return "not a safetensors file (malformed header)"
    if 8 + n + end > size:
        return f"truncated: {size} bytes, header needs {8 + n + end}"
    return None


def folder_problem(folder: Path) -> str | None:
    """A cheap check of a model folder before choosing it: its index and every weights file it
    lists are present with sane safetensors headers (hashes are checked when it is loaded)."""
    index_path = Path(folder) / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        return f"{index_path}: unreadable ({exc})"
    for rel in index.get("sha256", {}):
        problem = safetensors_problem(Path(folder) / rel)
        if problem:
            return f"{Path(folder) / rel}: {problem}"
    conv_path = Path(folder) / "conventions.json"  # weights/conventions.py; fully checked when loaded
    try:
        family = json.loads(conv_path.read_text()).get("family")
    except (OSError, ValueError, AttributeError) as exc:
        return f"{conv_path}: unreadable ({exc}); re-run the converter"
    if family not in ("gen3dface", "syncdreamer", "morphable"):
        return f"{conv_path}: unknown checkpoint family {family!r}"
    return None
