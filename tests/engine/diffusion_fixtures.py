"""Tiny multi-view diffusion models and inputs for tests (no downloads, seeded).

``write_tiny_model(folder)`` writes a complete model folder the engine loads with
``engine.multiview.diffusion.load_pipeline``; the CLI end-to-end test can point
``--weights`` at it. ``tiny_inputs()`` gives a crop, its camera and a prior mesh.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_SIZE = 64
TINY_VIEWS = 4


def write_tiny_model(folder: Path, seed: int = 0, n_views: int = TINY_VIEWS, size: int = TINY_SIZE, **overrides) -> Path:
    """A seeded random tiny model folder (latent 8², 64² views) at ``folder``."""
    from engine.multiview.diffusion import save_pretrained
    from engine.multiview.diffusion.presets import tiny_pipeline

    return save_pretrained(tiny_pipeline(seed=seed, n_views=n_views, size=size, **overrides), folder)


def tiny_inputs(size: int = TINY_SIZE, seed: int = 0):
    """(crop RGBA uint8 [size, size, 4], crop camera, vertices [V, 3], faces [F, 3]).

    The prior is an ellipsoid the size of a head (0.09 × 0.11 × 0.13 m) at the origin.
    """
    import trimesh

    from recon.cameras import orbit_camera

    rng = np.random.RandomState(seed)
    crop = (rng.rand(size, size, 4) * 255).astype(np.uint8)
    crop[..., 3] = 255
    mesh = trimesh.creation.icosphere(2, radius=1.0)
    vertices = mesh.vertices * np.array([0.09, 0.11, 0.13])
    camera = orbit_camera(10.0, 5.0, 1.0, 26.0, size)
    return crop, camera, vertices, mesh.faces


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny model folder shared by the tests of a session."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_multiview") / "multiview")
