"""Versions of the packages a run depends on, for result.json and ``doctor``."""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from . import __version__

#: Distributions reported in every manifest (missing ones are reported as null).
PACKAGES = (
    "torch", "numpy", "pillow", "scipy", "mediapipe", "trimesh", "xatlas", "scikit-image",
    "fast-simplification", "safetensors", "diffusers", "nerfacc", "transformers", "spconv", "bpy",
)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """``{"gen3dface": ..., "python": ..., <package>: version or None}``."""
    out: dict[str, str | None] = {"gen3dface": __version__, "python": platform.python_version(),
                                  "platform": platform.platform()}
    out.update({name: package_version(name) for name in PACKAGES})
    out["executable"] = sys.executable
    return out
