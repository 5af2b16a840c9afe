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
