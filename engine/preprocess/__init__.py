"""Preprocess: photo → upright RGB, 478 landmarks, square head crop with matte, input camera.

Steps (docs/architecture.md, "Data flow"): load with guards and EXIF orientation (``load``) → find
the largest face and its 478 mediapipe landmarks (``detect``) → square crop around the
whole head (``crop``) → foreground matte (``matte``) → hands, glasses and hats taken out of
what is projected (``occluders``) → the input camera (``camera``) → write ``input/`` (``outputs``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.context import RunContext

from . import camera as _camera
from .config import PreprocessConfig, Preprocessed
from .crop import crop_square, head_box, inside_mask, to_crop
from .detect import close_graphs, find_face
from .load import LoadedImage, load_image, load_photo
from .matte import matte
from .occluders import remove_occluders
from .outputs import write_input_dir

__all__ = ["PreprocessConfig", "Preprocessed", "run", "load_photo", "load_image", "LoadedImage", "close_graphs"]

log = logging.getLogger(__name__)

_STEPS = 5


def run(photo_path: Path, out_dir: Path, config: PreprocessConfig, ctx: RunContext) -> Preprocessed:
    """Preprocess ``photo_path`` and write ``out_dir/input/``; see ``Preprocessed``.

    Raises ``BadInput`` (exit 2) for unreadable, too large / small or faceless photos,
    before anything is written.
    """
    photo_path = Path(photo_path)
    # 1. Load: size guards before decoding, EXIF orientation, any mode → RGB (+ alpha).
    ctx.progress(0, _STEPS, "loading photo")
    loaded = load_image(photo_path, config.max_megapixels, config.min_size, config.background)
    rgb = loaded.rgb
    h, w = rgb.shape[:2]
    # 2. The largest face and its 478 landmarks.
    ctx.progress(1, _STEPS, "finding the face")
    landmarks, n_faces = find_face(rgb, photo_path, config.detect_confidence, config.detect_max_side,
                                  cancel=ctx.check_cancelled)
    if n_faces > 1:
        ctx.warn("multiple_faces", f"{photo_path}: {n_faces} faces found; using the largest")
    # 3. Square crop around the whole head, resampled to the working size.
    ctx.progress(2, _STEPS, "cropping the head")
    box = head_box(landmarks, config.head_scale, config.head_shift)
    fill = config.background if config.pad_mode == "neutral" else 0
    pad = "edge" if config.pad_mode == "edge" else "constant"
    crop_rgb = crop_square(rgb, box, config.size, pad=pad, fill=fill)
    landmarks_crop = to_crop(landmarks, box, config.size)
    # 4. Foreground matte: the photo's own alpha when it has one, else the segmenter's.
    ctx.progress(3, _STEPS, "matting")
    alpha = _matte(loaded, box, crop_rgb, landmarks_crop, config)
    alpha = _outside_photo_is_background(alpha, box, w, h, photo_path, ctx)
    if config.occluders:
        crop_rgb, alpha = remove_occluders(crop_rgb, alpha, landmarks_crop, photo_path, ctx)
    crop = np.concatenate([crop_rgb, alpha[..., None]], axis=-1)
    # 5. Camera: EXIF 35 mm focal or the default field of view, carried into the crop.
    ctx.progress(4, _STEPS, "writing input/")
    k_photo, source = _camera.photo_intrinsics(w, h, loaded.focal_35mm, config.default_fov_deg)
    k_crop = _camera.crop_intrinsics(k_photo, box, config.size)
    box_f = tuple(float(v) for v in box)
    result = Preprocessed(
        photo=rgb, crop=crop, landmarks_image=landmarks, landmarks_crop=landmarks_crop, crop_box=box_f,
        fx=k_crop.fx, fy=k_crop.fy, cx=k_crop.cx, cy=k_crop.cy, focal_source=source, n_faces=n_faces)
    write_input_dir(out_dir, rgb, crop, _landmarks_json(result), _camera_json(k_photo, k_crop, source, loaded),
                    config.png_compress_level)
    ctx.progress(_STEPS, _STEPS, "done")
    return result


def _matte(loaded: LoadedImage, box, crop_rgb: np.ndarray, landmarks_crop: np.ndarray,
           config: PreprocessConfig) -> np.ndarray:
    """Alpha [S, S] uint8 for the crop."""
    hint = None
    if loaded.alpha is not None and config.alpha_hint:
        # Outside the photo is outside the cut-out: pad the alpha with 0.
        hint = crop_square(loaded.alpha, box, config.size, pad="constant", fill=0)
        if (loaded.alpha < 128).mean() >= config.cutout_fraction:
            return hint
    nose = landmarks_crop[1, :2]  # mediapipe index 1: nose tip, inside the face blob
    alpha = matte(crop_rgb, (float(nose[0]), float(nose[1])), config.matte_radius, config.matte_eps)
    return alpha if hint is None else np.minimum(alpha, hint)


def _outside_photo_is_background(alpha: np.ndarray, box, w: int, h: int, photo_path: Path,
                                 ctx: RunContext) -> np.ndarray:
    """Zero the matte where the crop is padding: replicated border pixels are not the head.

    alpha: [S, S] uint8. Warns ``head_cut`` when the segmenter saw the head continue past
    the photo's top edge (a tight portrait that cuts the hair): the views will show a flat top.
    """
    inside = inside_mask(box, w, h, alpha.shape[0])
    if inside.all():
        return alpha
    top = ~inside.any(axis=1)  # crop rows entirely above (or below) the photo
    top[alpha.shape[0] // 2:] = False
    if top.any() and (alpha[top] > 127).mean() > 0.05:
        ctx.warn("head_cut", f"{photo_path}: the head continues past the photo's top edge; "
                             "the crop is cut there (use a photo with space above the hair)")
    return np.where(inside, alpha, 0).astype(np.uint8)


def _landmarks_json(pre: Preprocessed) -> dict:
    h, w = pre.photo.shape[:2]
    return {
        "format": "mediapipe-478",
        "coords": "continuous pixel coordinates (pixel i spans [i, i+1]); z is mediapipe's relative "
                  "depth in the same pixel scale as x, smaller = closer",
        "image_size": [w, h],
        "crop_size": int(pre.crop.shape[0]),
        "crop_box": list(pre.crop_box),
        "n_faces": pre.n_faces,
        "image": np.round(pre.landmarks_image, 4).tolist(),
        "crop": np.round(pre.landmarks_crop, 4).tolist(),
    }


def _camera_json(k_photo, k_crop, source: str, loaded: LoadedImage) -> dict:
    return {
        "model": "pinhole, square pixels, principal point at the photo centre",
        "focal_source": source,
        "focal_35mm": loaded.focal_35mm,
        "fov_diagonal_deg": _camera.diagonal_fov_deg(k_photo),
        "photo": k_photo.as_dict(),
        "crop": k_crop.as_dict(),
        "exif_orientation": loaded.orientation,
    }
