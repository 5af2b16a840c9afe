"""A synthetic multi-view head set the project makes itself (tests, the small model's data).

Each identity is the built-in template head (``engine/prior/template.py``) with random
shape and expression coefficients and jaw opening, painted per vertex: skin tone with
blotches, a hairline (``engine/multiview/_fill.hair_prior``) and hair with strands
(``hair_variation``), irises, sclera, brows and lips placed at the template's own
mediapipe landmark positions; rendered under one of several lighting set-ups
(``render.LIGHTINGS``) at a view layout (``engine/multiview/layouts.py``; the paper's
48 views by default). Output is the "posed multi-view renders" source of ``dataset build``:
``<out>/<id>/transforms.json`` + ``<out>/<id>/images/view_XXX.png`` (RGBA) and the ground
truth ``<out>/<id>/truth.json`` (coefficients, colours; never read by training).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.multiview._fill import HeadFrame, _blobs, hair_prior, hair_variation
from engine.multiview.layouts import get_layout
from recon.cameras import to_transforms

from .render import LIGHTINGS, render

log = logging.getLogger(__name__)

# mediapipe face-mesh ids (canonical topology): eye contours, irises, brows, lips
_EYE_L = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_EYE_R = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
_IRIS = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
_BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 336, 296, 334, 293, 300, 285, 295, 282, 283, 276)
_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
         78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)

SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.90, 0.72, 0.58], [0.80, 0.60, 0.46], [0.66, 0.46, 0.33],
                       [0.50, 0.34, 0.24], [0.36, 0.24, 0.17]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.75, 0.60, 0.35],
                         [0.55, 0.22, 0.10], [0.62, 0.62, 0.62]])
EYE_COLOURS = np.array([[0.30, 0.18, 0.08], [0.20, 0.35, 0.55], [0.30, 0.45, 0.25], [0.45, 0.35, 0.20]])


@dataclass(frozen=True)
class SyntheticConfig:
    """How many synthetic identities and how they are drawn and rendered."""

    n_identities: int = 8
    """Identities to make."""
    n_views: int = 48
    """Views per identity on the gen3dface layout (the paper: 48, azimuth −180..180, elevation ±40)."""
    size: int = 128
    """Side of the views in pixels."""
    seed: int = 0
    """Identity i draws from seed·100003 + i (the set is reproducible item by item)."""
    shape_sigma: float = 1.0
    """Standard deviation of the shape coefficients (template units)."""
    expr_sigma: float = 0.5
    """Standard deviation of the expression coefficients."""
    max_jaw: float = 0.15
    """Largest jaw opening, radians."""


def _near(points: np.ndarray, targets: np.ndarray, radius: float) -> np.ndarray:
    """[N] in [0, 1]: 1 at the targets, 0 beyond ``radius`` (metres), smooth in between."""
    d = np.linalg.norm(points[:, None] - targets[None], axis=-1).min(1)
    return np.clip(1 - d / radius, 0, 1) ** 0.7


def head_colours(v: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Per-vertex albedo [V, 3] of one random identity and what was drawn (JSON-ready).

    v: [V, 3] vertices; lm: [478, 3] the template's mediapipe points on this shape.
    """
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05, 3)
    hair_c = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15, 3)
    eye_c = EYE_COLOURS[rng.integers(len(EYE_COLOURS))]
    bald = rng.random() < 0.1
    seed = int(rng.integers(1 << 30))
    col = skin[None] * (1 + 0.05 * _blobs(v, seed))[:, None]
    frame = HeadFrame.from_vertices(v)
    if not bald:
        hair = hair_prior(v, v, frame, side_hair=float(rng.random()))[:, None]
        col = col * (1 - hair) + hair_variation(v, hair_c, 0.1, frame, seed) * hair
    lips = _near(v, lm[list(_LIPS)], 0.006)[:, None]
    col = col * (1 - lips) + lips * (skin * np.array([0.85, 0.5, 0.5]))
    brows = _near(v, lm[list(_BROWS)], 0.005)[:, None]
    col = col * (1 - 0.8 * brows) + 0.8 * brows * np.minimum(hair_c, skin * 0.5)
    for eye, iris in ((_EYE_L, _IRIS[0]), (_EYE_R, _IRIS[1])):
        white = _near(v, lm[list(eye)], 0.004)[:, None]
        col = col * (1 - white) + white * np.array([0.92, 0.9, 0.88])
        centre = lm[list(iris)].mean(0, keepdims=True)
        ring = _near(v, centre, 0.0075)[:, None] > 0
        pupil = _near(v, centre, 0.003)[:, None] > 0
        col = np.where(ring, eye_c, col)
        col = np.where(pupil, 0.03, col)
    drawn = {"skin": skin.round(4).tolist(), "hair": None if bald else hair_c.round(4).tolist(),
             "eyes": eye_c.tolist()}
    return np.clip(col, 0, 1).astype(np.float32), drawn


def make_identity(index: int, config: SyntheticConfig, model=None) -> dict:
    """Draw identity ``index``: {vertices [V, 3], faces, colours [V, 3], lighting, truth}."""
    from engine.prior.template import TemplateHead

    model = model or TemplateHead()
    rng = np.random.default_rng(config.seed * 100003 + index)
    shape = torch.as_tensor(rng.normal(0, config.shape_sigma, model.n_shape), dtype=torch.float32)
    expr = torch.as_tensor(rng.normal(0, config.expr_sigma, model.n_expr), dtype=torch.float32)
    jaw = torch.tensor([rng.uniform(0, config.max_jaw), 0.0, 0.0])
    with torch.no_grad():
        verts = model.vertices(shape, expr, jaw)
        lm = model.all_landmarks(verts).numpy().astype(np.float64)
    v = verts.numpy().astype(np.float64)
    colours, drawn = head_colours(v, lm, rng)
    lighting = sorted(LIGHTINGS)[int(rng.integers(len(LIGHTINGS)))]
    truth = {"index": index, "shape": shape.tolist(), "expr": expr.tolist(), "jaw": jaw.tolist(),
             "lighting": lighting, **drawn}
    return {"vertices": v, "faces": np.asarray(model.faces), "colours": colours, "lighting": lighting, "truth": truth}


def write_identity(out: Path, index: int, config: SyntheticConfig, model=None) -> Path:
    """Render identity ``index`` into ``out/synth_XXXXX/``; returns that folder."""
    from PIL import Image

    head = make_identity(index, config, model)
    folder = Path(out) / f"synth_{index:05d}"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    cams = get_layout("gen3dface", config.n_views).cameras(config.size)
    paths = []
    for i, cam in enumerate(cams):
        img = render(head["vertices"], head["faces"], cam, colours=head["colours"], lighting=LIGHTINGS[head["lighting"]])
        rel = f"images/view_{i:03d}.png"
        Image.fromarray(img, "RGBA").save(folder / rel, compress_level=1)
        paths.append(rel)
    (folder / "transforms.json").write_text(json.dumps(to_transforms(cams, paths, {"source": "synthetic"}), indent=1))
    (folder / "truth.json").write_text(json.dumps(head["truth"]))
    return folder


def make_set(out: Path, config: SyntheticConfig) -> list[Path]:
    """All ``config.n_identities`` identities under ``out``; identities already written are kept."""
    from engine.prior.template import TemplateHead

    model = TemplateHead()
    done = []
    for i in range(config.n_identities):
        folder = Path(out) / f"synth_{i:05d}"
        if not (folder / "truth.json").is_file():
            write_identity(out, i, config, model)
        done.append(folder)
    return done
