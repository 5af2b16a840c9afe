"""The identity embedding of a crop for the identity token (SpinMeRound, seed 000).

dlib's 128-d face descriptor (``engine.eval.embedders.DlibFaces``) of the largest face in the
crop, composited on white as the model sees it. The same function serves the dataset cache
(``engine/dataset/identity.py``, training) and the input photo at inference (``run``), so
both see the same embedding of the same crop. No face: ``None`` (the caller uses zeros).
"""
from __future__ import annotations

import numpy as np

#: Width of the descriptor (dlib's ResNet face descriptor).
IDENTITY_DIM = 128
BACKEND = "dlib"


def on_white(crop: np.ndarray) -> np.ndarray:
    """RGBA (or RGB) uint8 [h, w, 3|4] → RGB uint8 on white (the pipeline's background)."""
    crop = np.asarray(crop)
    if crop.shape[-1] == 3:
        return np.ascontiguousarray(crop.astype(np.uint8))
    a = crop[..., 3:].astype(np.float32) / 255.0
    rgb = crop[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
    return np.ascontiguousarray((rgb + 0.5).clip(0, 255).astype(np.uint8))


def embedder():
    """dlib's detector + descriptor, loaded once per caller (exit 3 when the package is missing)."""
    from engine.eval.embedders import DlibFaces

    return DlibFaces()


def embed_crop(crop: np.ndarray, faces=None) -> np.ndarray | None:
    """The [128] float32 descriptor of the largest face in ``crop``, or None when dlib finds none."""
    found = (faces or embedder()).faces(on_white(crop))
    return None if not found else np.asarray(found[0].vector, np.float32)
