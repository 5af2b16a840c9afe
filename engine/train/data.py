"""Training samples from the dataset format, in an order fixed by (seed, sample number).

Sample number g (0, 1, 2, … over the whole run, all processes together) is item
``perm_e[g mod n]`` of epoch e = g div n, where ``perm_e`` is a seeded permutation; its target
views, timestep, noise and condition dropout come from a generator seeded by (seed, g). So any
process layout and any resume point reads exactly the same stream.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.dataset import format as fmt
from recon.cameras import Camera


@dataclass
class Sample:
    """One identity as the model sees it. input_rgb [3, S, S] and targets [N, 3, S, S] in [0, 1] on
    white; cameras at S px; vertices [P, 3] (the estimated prior); generator: this sample's RNG."""

    id: str
    input_rgb: torch.Tensor
    input_camera: Camera
    targets: torch.Tensor
    target_cameras: list[Camera]
    vertices: torch.Tensor
    faces: np.ndarray
    generator: torch.Generator
    index: int
    frontal_rgb: torch.Tensor | None = None  # [3, S, S]: the item's most frontal view (frontal_clip)
    references: torch.Tensor | None = None  # [R, 3, S, S]: extra reference views (multi_reference)
    reference_cameras: list[Camera] | None = None
    identity: torch.Tensor | None = None  # [128]: the input crop's face descriptor (identity_token; None: no face)


def to_rgb(rgba: np.ndarray, size: int) -> torch.Tensor:
    """RGBA uint8 [..., h, w, 4] → RGB on white [..., 3, size, size] in [0, 1] (the pipeline's preprocess)."""
    x = torch.from_numpy(np.array(rgba, dtype=np.float32)) / 255.0
    x = x.movedim(-1, -3)
    rgb = x[..., :3, :, :] * x[..., 3:, :, :] + (1 - x[..., 3:, :, :])
    flat = rgb.reshape(-1, 3, *rgb.shape[-2:])
    out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out.reshape(*rgb.shape[:-3], 3, size, size)


def sample_seed(seed: int, g: int) -> int:
    """Seed of sample number ``g``'s generator (a fixed mix, no Python ``hash``)."""
    return (seed * 1_000_003 + g * 7_919 + 12_345) % (2 ** 63 - 1)


class TrainSet:
    """The items of a dataset root split into training and held-out ids (the last ``val_items``)."""

    def __init__(self, root: str | Path, image_size: int, n_targets: int, seed: int, val_items: int = 0,
                 n_references: int = 0, identity: bool = False):
        self.root = Path(root)
        ids = fmt.list_items(self.root)
        if len(ids) <= val_items:
            raise fmt.DatasetError(self.root, f"{len(ids)} items: need more than the {val_items} held out")
        self.train_ids = ids[:len(ids) - val_items] if val_items else ids
        self.val_ids = ids[len(ids) - val_items:] if val_items else []
        self.image_size, self.n_targets, self.seed, self.n_references = image_size, n_targets, seed, n_references
        self.identity = identity

    @functools.lru_cache(maxsize=64)
    def _item(self, item_id: str) -> fmt.Item:
        return fmt.load_item(self.root, item_id)

    def item_at(self, g: int) -> str:
        """The training id read as sample number ``g``."""
        n = len(self.train_ids)
        epoch, pos = divmod(g, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7 + epoch))
        return self.train_ids[int(perm[pos])]

    def sample(self, g: int) -> Sample:
        """Sample number ``g`` of the training stream."""
        return self.load(self.item_at(g), torch.Generator().manual_seed(sample_seed(self.seed, g)), g)

    def load(self, item_id: str, generator: torch.Generator, index: int = -1, views: list[int] | None = None) -> Sample:
        """``item_id`` with ``n_targets`` target views drawn by ``generator`` (or the given ``views``)."""
        item = self._item(item_id)
        others = [i for i in range(len(item.cameras)) if i != item.input_view]
        need = self.n_targets + self.n_references
        if len(others) < need:
            raise fmt.DatasetError(self.root / item_id, f"{len(others)} views besides the input, {need} asked")
        pick = [others[i] for i in torch.randperm(len(others), generator=generator).tolist()]
        views = pick[:self.n_targets] if views is None else views
        refs = [i for i in pick if i not in views][:self.n_references]
        s = self.image_size
        cams = [item.cameras[i].resized(s, s) for i in views]
        sample = Sample(item_id, to_rgb(item.crop, s), item.input_camera.resized(s, s), to_rgb(item.views[views], s),
                        cams, torch.from_numpy(item.vertices), item.faces, generator, index)
        sample.frontal_rgb = to_rgb(item.views[frontal_view(item)], s)
        if self.identity:
            from engine.dataset.identity import read_identity

            vector = read_identity(self.root, item_id)
            sample.identity = None if vector is None else torch.from_numpy(vector)
        if refs:
            sample.references = to_rgb(item.views[refs], s)
            sample.reference_cameras = [item.cameras[i].resized(s, s) for i in refs]
        return sample


def frontal_view(item: fmt.Item) -> int:
    """The view whose camera is nearest the face direction of the prior's frame (−Y)."""
    c = np.stack([cam.center / max(np.linalg.norm(cam.center), 1e-9) for cam in item.cameras])
    return int(np.argmax(c @ np.array([0.0, -1.0, 0.0])))
