"""recon.dataset: nerfstudio transforms.json loading, and each bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cameras import orbit_camera, to_transforms
from recon.dataset import load_transforms
from recon.errors import ReconInputError

SIZE = 12


def _disc(alpha: bool, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    inside = ((yy - SIZE / 2 + 0.5) ** 2 + (xx - SIZE / 2 + 0.5) ** 2) < (SIZE / 3) ** 2
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[inside] = (200, 100, 50)
    if not alpha:
        return rgb
    return np.dstack([rgb, (inside * value).astype(np.uint8)])


def _write_set(root: Path, n: int = 4, alpha: bool = True, per_frame: bool = False, ext: bool = True) -> Path:
    cams = [orbit_camera(360 * i / n, 10, 1.0, 40, SIZE) for i in range(n)]
    names = []
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_disc(alpha)).save(root / "images" / f"f{i}.png")
        names.append(f"images/f{i}.png" if ext else f"images/f{i}")
    meta = to_transforms(cams, names)
    if per_frame:  # move the intrinsics into every frame (nerfstudio allows both)
        intr = {k: meta.pop(k) for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
        for f in meta["frames"]:
            f.update(intr)
    path = root / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


def _edit(path: Path, fn) -> Path:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
    return path


def test_engine_style_rgba(tmp_path):
    views = load_transforms(_write_set(tmp_path))
    assert len(views) == 4 and views.images.shape == (4, SIZE, SIZE, 3) and views.masks.shape == (4, SIZE, SIZE)
    assert views.masks.max() == 1.0 and views.masks.min() == 0.0
    assert np.allclose(views.images[0, SIZE // 2, SIZE // 2], np.array([200, 100, 50]) / 255)
    assert views.cameras[1].w == SIZE


def test_per_frame_intrinsics_without_extension(tmp_path):
    views = load_transforms(_write_set(tmp_path, per_frame=True, ext=False))
    assert len(views) == 4 and views.paths[0].suffix == ".png"


def test_rgb_with_mask_path(tmp_path):
    path = _write_set(tmp_path, alpha=False)
    for i in range(4):
        Image.fromarray(_disc(True)[..., 3]).save(tmp_path / f"m{i}.png")
    _edit(path, lambda m: [f.update(mask_path=f"m{i}.png") for i, f in enumerate(m["frames"])])
    views = load_transforms(path)
    assert views.masks.sum() > 0 and views.masks.max() == 1.0


BAD = {
    "missing transform_matrix": (lambda m: m["frames"][1].pop("transform_matrix"), "transform_matrix"),
    "missing fl_x": (lambda m: m.pop("fl_x"), "fl_x"),
    "non-finite matrix": (lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(3, float("nan")), "non-finite"),
    "singular matrix": (lambda m: m["frames"][0].__setitem__("transform_matrix", np.zeros((4, 4)).tolist()), "singular"),
    "missing image": (lambda m: m["frames"][2].__setitem__("file_path", "images/nope.png"), "not found"),
    "too few views": (lambda m: m.__setitem__("frames", m["frames"][:2]), "at least 3"),
    "no frames": (lambda m: m.pop("frames"), "frames"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_transforms(tmp_path, name):
    fn, words = BAD[name]
    path = _edit(_write_set(tmp_path), fn)
    with pytest.raises(ReconInputError, match=words) as info:
        load_transforms(path)
    assert str(path) in str(info.value) or "images" in str(info.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(ReconInputError, match="not found"):
        load_transforms(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ReconInputError, match="JSON"):
        load_transforms(tmp_path / "bad.json")


def test_mixed_sizes(tmp_path):
    path = _write_set(tmp_path, per_frame=True)
    Image.fromarray(np.zeros((SIZE + 2, SIZE + 2, 4), np.uint8)).save(tmp_path / "images" / "f3.png")
    _edit(path, lambda m: m["frames"][3].update(w=SIZE + 2, h=SIZE + 2, cx=7.0, cy=7.0))
    with pytest.raises(ReconInputError, match="mixed sizes"):
        load_transforms(path)


def test_image_size_disagrees_with_transforms(tmp_path):
    path = _write_set(tmp_path)
    Image.fromarray(np.zeros((SIZE + 2, SIZE, 4), np.uint8)).save(tmp_path / "images" / "f1.png")
    with pytest.raises(ReconInputError, match="transforms.json says"):
        load_transforms(path)


def test_all_empty_masks(tmp_path):
    path = _write_set(tmp_path)
    for i in range(4):
        Image.fromarray(np.zeros((SIZE, SIZE, 4), np.uint8)).save(tmp_path / "images" / f"f{i}.png")
    with pytest.raises(ReconInputError, match="empty"):
        load_transforms(path)


def test_rgb_without_mask(tmp_path):
    with pytest.raises(ReconInputError, match="alpha"):
        load_transforms(_write_set(tmp_path, alpha=False))


def test_mask_of_wrong_size(tmp_path):
    path = _write_set(tmp_path, alpha=False)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "m.png")
    _edit(path, lambda m: [f.update(mask_path="m.png") for f in m["frames"]])
    with pytest.raises(ReconInputError, match="mask is 3x3"):
        load_transforms(path)
