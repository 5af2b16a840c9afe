"""Shared fixtures: the bundled portrait and small images made on the fly."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "torch_extensions"))


@pytest.fixture(scope="session")
def portrait_array() -> np.ndarray:
    """skimage's astronaut (Eileen Collins, public domain): RGB uint8 [512, 512, 3]."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def portrait_path(tmp_path_factory, portrait_array) -> Path:
    """The portrait written as a PNG."""
    from PIL import Image

    path = tmp_path_factory.mktemp("portrait") / "astronaut.png"
    Image.fromarray(portrait_array).save(path)
    return path
