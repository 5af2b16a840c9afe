"""Validation during training: generated views of held-out identities beside their true renders."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import TrainSet

log = logging.getLogger(__name__)


def generate_views(pipe, data: TrainSet, item_id: str, n_views: int, steps: int, seed: int = 0,
                   guidance: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(generated [N, S, S, 4] uint8, true [N, S, S, 3] float in [0, 1] on white) for a held-out item,
    on its first ``n_views`` non-input views (fixed, so sheets of different steps compare)."""
    item = data._item(item_id)
    views = [i for i in range(len(item.cameras)) if i != item.input_view][:: max(1, (len(item.cameras) - 1) // n_views)][:n_views]
    s = data.load(item_id, torch.Generator().manual_seed(seed), views=views)
    modules = [m for m in pipe.modules()]
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        out = pipe(item.crop, s.input_camera, item.vertices, item.faces, s.target_cameras, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed))
    finally:
        for m, t in zip(modules, was):
            m.train(t)
    return out.images, s.targets.permute(0, 2, 3, 1).numpy()


def contact_sheet(pipe, data: TrainSet, path: Path, cfg: TrainConfig, n_views: int = 4) -> Path:
    """One row per held-out item: input crop, generated views, then the true views."""
    from PIL import Image

    from engine.multiview._shade import contact_sheet as sheet

    tiles = []
    for item_id in data.val_ids:
        gen, true = generate_views(pipe, data, item_id, n_views, cfg.val_steps, cfg.seed)
        crop = data._item(item_id).crop
        true8 = np.concatenate([(true * 255).round().astype(np.uint8), np.full(true.shape[:3] + (1,), 255, np.uint8)], -1)
        tiles += [crop, *gen, *true8]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet(tiles, columns=1 + 2 * n_views, tile=128)).save(path)
    log.info("validation sheet %s", path)
    return path
