"""Where the engine looks for user-supplied model files (FLAME, weights)."""
from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the models folder; the add-on's "weights/FLAME folder".
MODELS_ENV = "GEN3DFACE_MODELS"


def default_models_dir() -> Path:
    """``$GEN3DFACE_MODELS``, else ``$XDG_DATA_HOME/gen3dface/models`` (~/.local/share/...)."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "gen3dface" / "models"


def cache_dir() -> Path:
    """Derived files (converted FLAME .npz, generated template): ``$XDG_CACHE_HOME/gen3dface``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gen3dface"
