"""The preprocess stage's configuration and result types."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """How a photo becomes the square head crop the later stages read."""

    size: int = 512
    """Side of the square crop in pixels (the working resolution of the later stages)."""

    max_megapixels: float = 40.0
    """Refuse photos with more pixels than this, read from the header BEFORE decoding
    (a decompression bomb never reaches memory)."""

    min_size: int = 64
    """Refuse photos whose shorter side is below this many pixels: too few to find a face."""

    default_fov_deg: float = 46.8
    """Diagonal field of view assumed when EXIF has no FocalLengthIn35mmFilm: 46.8° is a
    50 mm lens on the 36×24 mm frame (2·atan(43.27 / 2 / 50)), the classic portrait
    "normal" lens. The prior stage refines the focal from the landmarks."""

    head_scale: float = 2.4
    """Side of the crop as a multiple of the face height (chin landmark 152 to forehead
    landmark 10, measured in the image plane). 2.4 leaves the whole head, hair included,
    inside the crop with a margin, as the multi-view model expects the object centred with
    space around it (SyncDreamer-style inputs)."""

    head_shift: float = 0.2
    """How far above the face centre (midpoint of landmarks 10 and 152) the crop is
    centred, in face heights, along the face's own up direction: the skull and hair sit
    above the forehead landmark while only the chin sits below the face."""

    pad_mode: str = "edge"
    """How the crop is filled where the head box leaves the photo: "edge" replicates the
    border pixels (keeps the segmenter's view of hair/shoulders continuous), "neutral"
    fills with ``background``."""

    background: tuple[int, int, int] = (128, 128, 128)
    """Neutral RGB that transparent photos are composited over (and "neutral" padding)."""

    detect_confidence: float = 0.5
    """Minimum mediapipe face-detection score for a face to count."""

    detect_max_side: int = 1280
    """Photos are downscaled to at most this longer side for face DETECTION only
    (mediapipe's detector sees 128–192 px anyway); landmarks come from a full-resolution
    crop around the chosen face."""

    matte_radius: float = 1 / 128
    """Radius of the guided filter that refines the matte edges, as a fraction of ``size``."""

    matte_eps: float = 1e-3
    """Regularisation of the guided filter: smaller follows image edges (hair) more closely."""

    occluders: bool = True
    """Take hands, glasses and hats found in the crop out of what is projected (``occluders``):
    hands and hats leave the matte, a glasses frame is inpainted, dark lenses leave the matte."""

    alpha_hint: bool = True
    """Use the photo's own alpha. When at least ``cutout_fraction`` of the photo is
    transparent the photo is a cut-out and its alpha IS the matte (the user already
    removed the background); otherwise (rounded corners, a transparent frame) the
    segmenter's matte is used, limited to where the photo is opaque."""

    cutout_fraction: float = 0.05
    """Fraction of photo pixels with alpha < 50 % above which the photo counts as a cut-out."""

    png_compress_level: int = 1
    """zlib level for the PNGs written to input/ (1: fast; the files are intermediates)."""

    def __post_init__(self):
        if self.size < 64:
            raise ValueError(f"size must be >= 64, got {self.size}")
        if self.pad_mode not in ("edge", "neutral"):
            raise ValueError(f"pad_mode must be 'edge' or 'neutral', got {self.pad_mode!r}")
        if not 1.0 < self.default_fov_deg < 170.0:
            raise ValueError(f"default_fov_deg must be in (1, 170), got {self.default_fov_deg}")
        if self.head_scale <= 0 or self.max_megapixels <= 0 or self.min_size < 1:
            raise ValueError("head_scale, max_megapixels and min_size must be positive")

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessConfig":
        """Build from a plain dict (e.g. JSON); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown preprocess config keys: {', '.join(unknown)}")
        values = dict(values)
        if "background" in values:
            values["background"] = tuple(int(v) for v in values["background"])
        return cls(**values)


@dataclass(frozen=True)
class Preprocessed:
    """What the stage hands to the prior and multi-view stages (also written to input/)."""

    photo: np.ndarray
    """[H, W, 3] uint8, EXIF-oriented RGB (transparent photos composited over ``background``)."""
    crop: np.ndarray
    """[S, S, 4] uint8 RGBA, alpha = foreground matte."""
    landmarks_image: np.ndarray
    """[478, 3] float: x, y in photo pixels (continuous coords: pixel i spans [i, i+1]),
    z = mediapipe's relative depth in photo pixels (smaller = closer to the camera)."""
    landmarks_crop: np.ndarray
    """[478, 3] the same points in crop pixels (z scaled like x and y)."""
    crop_box: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the crop in photo pixels (may extend past the photo's border)."""
    fx: float
    """Focal of the crop (S×S image) in pixels, x."""
    fy: float
    """Focal of the crop in pixels, y."""
    cx: float
    """Principal point of the crop, x (continuous pixel coords)."""
    cy: float
    """Principal point of the crop, y (continuous pixel coords)."""
    focal_source: str
    """"exif" (FocalLengthIn35mmFilm) or "default" (``default_fov_deg``)."""
    n_faces: int
    """How many faces the detector found (the largest was used)."""
