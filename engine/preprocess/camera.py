"""The input camera estimated from the photo: a pinhole with square pixels, centred.

A 35 mm-equivalent focal length relates to the 36×24 mm frame's diagonal (43.27 mm), so
f_px = f35 · diag_px / 43.27 whatever the photo's aspect ratio. Without EXIF a default
diagonal field of view stands in; the prior stage refines the focal from the landmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (continuous coords) of a w × h image."""

    fx: float
    fy: float
    cx: float
    cy: float
    w: int
    h: int

    def as_dict(self) -> dict:
        """nerfstudio-style keys, as in transforms.json."""
        return {"fl_x": self.fx, "fl_y": self.fy, "cx": self.cx, "cy": self.cy, "w": self.w, "h": self.h,
                "fov_x_deg": math.degrees(2 * math.atan(self.w / (2 * self.fx))),
                "fov_y_deg": math.degrees(2 * math.atan(self.h / (2 * self.fy)))}


def photo_intrinsics(w: int, h: int, focal_35mm: float | None, default_fov_deg: float) -> tuple[Intrinsics, str]:
    """Intrinsics of the whole photo and the focal's source ("exif" or "default")."""
    diag = math.hypot(w, h)
    if focal_35mm:
        f, source = focal_35mm * diag / FRAME_DIAGONAL_MM, "exif"
    else:
        f, source = diag / (2.0 * math.tan(math.radians(default_fov_deg) / 2.0)), "default"
    return Intrinsics(f, f, w / 2.0, h / 2.0, int(w), int(h)), source


def diagonal_fov_deg(k: Intrinsics) -> float:
    return math.degrees(2.0 * math.atan(math.hypot(k.w, k.h) / (2.0 * k.fx)))


def crop_intrinsics(photo: Intrinsics, box: tuple[float, float, float, float], size: int) -> Intrinsics:
    """The same camera seen through a square crop ``box`` (photo pixels) resampled to size²."""
    scale = size / (box[2] - box[0])
    return Intrinsics(photo.fx * scale, photo.fy * scale, (photo.cx - box[0]) * scale,
                      (photo.cy - box[1]) * scale, size, size)
