"""The training dataset layout (docs/dataset.md): one folder per identity, RGBA views + cameras.

```
DATASET/
  <identity>/                 any folder name; one person
    transforms.json           the engine's convention (nerfstudio, Blender world): frames with
                              file_path + transform_matrix; optional "azimuths"/"elevations"
    views/view_XXX.png        RGBA renders or photos of that person, named by the frames
    input.png                 optional: the conditioning photo (front)
```

This is the smallest form a run directory's ``views/`` + ``transforms.json`` already has, so
runs of ``generate`` can be read as identities too. Issue 11 (training) builds on it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..eval.runs import View, view_angles


@dataclass(frozen=True)
class Identity:
    """One identity folder and its views (in transforms.json order)."""

    name: str
    root: Path
    views: list[View]


def load_identity(root: Path) -> Identity:
    """The identity at ``root``; ``BadInput`` naming the folder and what is wrong."""
    root = Path(root)
    try:
        transforms = json.loads((root / "transforms.json").read_text())
    except FileNotFoundError:
        raise BadInput(root, "not an identity folder: no transforms.json", "bad_dataset") from None
    except (OSError, ValueError) as exc:
        raise BadInput(root / "transforms.json", f"unreadable ({exc})", "bad_dataset") from None
    frames = transforms.get("frames") if isinstance(transforms, dict) else None
    if not isinstance(frames, list) or not frames:
        raise BadInput(root / "transforms.json", "no frames", "bad_dataset")
    views = []
    for i, frame in enumerate(frames):
        rel = frame.get("file_path") if isinstance(frame, dict) else None
        if not rel or not (root / str(rel)).is_file():
            raise BadInput(root, f"view {rel or i} is missing", "bad_dataset")
        azimuth, elevation = view_angles(frame, i, transforms, root / "transforms.json")
        views.append(View(root / str(rel), azimuth, elevation))
    return Identity(root.name, root, views)


def load_dataset(root: Path) -> list[Identity]:
    """Every identity folder of ``root`` (sorted by name); hidden folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(root, "dataset folder not found" if not root.exists() else "not a folder", "not_found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise BadInput(root, "no identity folders in the dataset", "bad_dataset")
    return [load_identity(p) for p in folders]
