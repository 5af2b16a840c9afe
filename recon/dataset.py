"""Loading a multi-view set from a nerfstudio ``transforms.json``.

Reads both the engine's output (``engine/multiview/views.py``: RGBA views, shared
intrinsics at the top level) and ordinary nerfstudio datasets: per-frame intrinsics,
``file_path`` relative to the json, with or without an extension (nerfstudio's Blender
parser appends ``.png``), RGB images with a ``mask_path`` (0 = background). Every bad
input raises ``ReconInputError(path, reason)`` naming the file.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .cameras import Camera, from_frame
from .errors import ReconInputError

log = logging.getLogger(__name__)

#: Extensions tried, in order, for a ``file_path`` that names no existing file.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".PNG", ".JPG", ".JPEG")
#: Fewest views a surface can be reconstructed from.
MIN_VIEWS = 3


@dataclass(frozen=True)
class ViewSet:
    """Posed views of one object.

    images: float32 [n, h, w, 3] straight (not premultiplied) sRGB in [0, 1].
    masks: float32 [n, h, w] foreground coverage in [0, 1].
    cameras: n cameras (Blender world, OpenGL axes).
    paths: the n image files.
    """

    images: np.ndarray
    masks: np.ndarray
    cameras: tuple[Camera, ...]
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.cameras)

    def subset(self, indices) -> "ViewSet":
        """The views at ``indices`` (e.g. to hold views out)."""
        idx = list(indices)
        return ViewSet(self.images[idx], self.masks[idx], tuple(self.cameras[i] for i in idx),
                       tuple(self.paths[i] for i in idx))


def resolve_image(base: Path, file_path: str, json_path: Path) -> Path:
    """The image file named by ``file_path`` (relative to ``base``), with or without an extension."""
    path = Path(file_path)
    path = path if path.is_absolute() else base / path
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    raise ReconInputError(json_path, f"image {file_path!r} not found (looked in {base})")


def _read_image(path: Path) -> np.ndarray:
    """uint8 [h, w, C] with C in (3, 4)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                return np.asarray(im.convert("RGBA"))
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ReconInputError(path, f"cannot read image ({exc})") from None


def _read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """float32 [h, w] in [0, 1]; ``size`` is the image's (w, h)."""
    try:
        with Image.open(path) as im:
            if im.size != size:
                raise ReconInputError(path, f"mask is {im.size[0]}x{im.size[1]}, image is {size[0]}x{size[1]}")
            m = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise ReconInputError(path, f"cannot read mask ({exc})") from None
    return m


def _load_frame(meta: dict, frame: dict, base: Path, json_path: Path, i: int):
    """(camera, rgb float32 [h, w, 3], mask float32 [h, w], image path) of one frame."""
    if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
        raise ReconInputError(json_path, f"frame {i} lacks 'file_path' or 'transform_matrix'")
    try:
        camera = from_frame(meta, frame)
    except KeyError as exc:
        raise ReconInputError(json_path, f"frame {i}: missing field {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise ReconInputError(json_path, f"frame {i}: {exc}") from None
    if abs(np.linalg.det(camera.c2w[:3, :3])) < 1e-6:
        raise ReconInputError(json_path, f"frame {i}: transform_matrix has a singular rotation")
    path = resolve_image(base, str(frame["file_path"]), json_path)
    pixels = _read_image(path)
    h, w = pixels.shape[:2]
    if (w, h) != (camera.w, camera.h):
        raise ReconInputError(path, f"image is {w}x{h} but transforms.json says {camera.w}x{camera.h}")
    rgb = pixels[..., :3].astype(np.float32) / 255.0
    if "mask_path" in frame:
        mask = _read_mask(resolve_image(base, str(frame["mask_path"]), json_path), (w, h))
    elif pixels.shape[2] == 4:
        mask = pixels[..., 3].astype(np.float32) / 255.0
    else:
        raise ReconInputError(path, "RGB image without an alpha channel and no 'mask_path' in its frame")
    return camera, rgb, mask, path


def load_transforms(transforms_path: str | Path) -> ViewSet:
    """Load every frame of a nerfstudio ``transforms.json``.

    Raises ReconInputError for: unreadable/invalid json, missing fields, non-finite or
    singular matrices, missing images, images of mixed sizes, fewer than ``MIN_VIEWS``
    views, all-empty masks.
    """
    json_path = Path(transforms_path)
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise ReconInputError(json_path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReconInputError(json_path, f"not a readable JSON file ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise ReconInputError(json_path, "no 'frames' list")
    frames = meta["frames"]
    if len(frames) < MIN_VIEWS:
        raise ReconInputError(json_path, f"{len(frames)} views; at least {MIN_VIEWS} are needed")
    if any(float(meta.get(k, 0) or 0) != 0 for k in ("k1", "k2", "k3", "p1", "p2")):
        log.warning("%s: lens distortion coefficients are ignored (pinhole assumed)", json_path)
    cams, rgbs, masks, paths = [], [], [], []
    for i, frame in enumerate(frames):
        camera, rgb, mask, path = _load_frame(meta, frame, json_path.parent, json_path, i)
        if rgbs and rgb.shape != rgbs[0].shape:
            raise ReconInputError(path, f"image is {rgb.shape[1]}x{rgb.shape[0]}, the first view is "
                                        f"{rgbs[0].shape[1]}x{rgbs[0].shape[0]} (mixed sizes)")
        cams.append(camera)
        rgbs.append(rgb)
        masks.append(mask)
        paths.append(path)
    masks_arr = np.stack(masks)
    if float(masks_arr.max()) < 0.5:
        raise ReconInputError(json_path, "every mask / alpha channel is empty (no foreground)")
    log.info("loaded %d views of %dx%d from %s", len(cams), rgbs[0].shape[1], rgbs[0].shape[0], json_path)
    return ViewSet(np.stack(rgbs), masks_arr, tuple(cams), tuple(paths))
