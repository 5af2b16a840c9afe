"""Skin colour from the photo with its shading removed (projection backend).

The invented skin (ears, the back and sides of the neck, under the chin) must continue the
photo's skin in one tone, for light and dark skin alike. Two things spoil a plain median
of a few patches: the photo's shading (the cheeks turn away from the light, the neck sits
in the chin's shadow) and a single colour for every region (the neck is often a little
darker or redder than the face). So:

1. ``shading_field``: the fitted head, rasterised through the input camera, gives a surface
   normal per crop pixel; the skin pixels' luminance is fitted by a first-order
   spherical-harmonic light (ambient + one direction, robust IRLS); dividing by it, relative
   to the shading of a surface facing the camera, takes the shading out of the photo's
   skin-coloured pixels (clamped to the range the skin spans, smoothed, 1 outside the head;
   hair and clothes keep their colours).
2. ``skin_regions``: forehead and cheek discs around mediapipe landmarks and a band of the
   neck below the chin (inside the matte, clothing excluded), with outliers (brows, shadows,
   highlights, stubble) rejected by their CIE Lab distance from the region's median.
3. ``estimate``: the Lab median per region of the de-shaded crop → ``SkinTone`` (face, neck,
   the chin's height), whose ``colour_at`` gives the fill per surface point: face skin above
   the jaw, neck skin below the chin, blended smoothly between (no seam under the jaw).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: mediapipe face-mesh points on the forehead (between the brows and the hairline).
FOREHEAD_IDS = (151, 108, 337, 9, 69, 299, 104, 333)
#: mediapipe points on the cheeks (below the eyes, beside the nose, above the jaw).
CHEEK_IDS = (50, 280, 205, 425, 117, 346, 123, 352, 187, 411, 101, 330)
CHIN_ID, JAW_IDS = 152, (172, 397)
#: Pixels further than this (CIE76 ΔE) from their region's median are not skin.
OUTLIER_DELTA_E = 18.0
#: Least skin pixels for a region's median (fewer: the region falls back to the face).
MIN_PIXELS = 40
#: The de-shading factor is kept within [1/MAX_GAIN, MAX_GAIN].
MAX_GAIN = 1.4
#: CIE76 ΔE from the face's skin below which a pixel is de-shaded fully, above which not at all.
SKIN_LIKE_DELTA_E = (10.0, 20.0)


@dataclass(frozen=True)
class SkinTone:
    """The photo's skin with the shading removed.

    face: float32 [3] sRGB 0..1 (forehead + cheeks); neck: float32 [3] (the neck band, or the
    face's where the neck is not seen); chin_z: height (Blender world, metres) of the chin
    point on the fitted head (None: unknown, the face colour everywhere); regions: pixel
    counts per region; light: the fitted SH coefficients [4] (ambient, x, y, z) or None.
    """

    face: np.ndarray
    neck: np.ndarray
    chin_z: float | None = None
    regions: dict | None = None
    light: np.ndarray | None = None

    def colour_at(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] skin fill at surface points [N, 3]: face above the jaw, neck below the chin."""
        p = np.asarray(points, np.float64)
        out = np.empty((len(p), 3), np.float32)
        out[:] = self.face
        if self.chin_z is None or np.allclose(self.face, self.neck):
            return out
        # from 2 cm above the chin (the jaw's lower edge) down to 3 cm below it
        t = np.clip((self.chin_z + 0.02 - p[:, 2]) / 0.05, 0, 1)
        t = t * t * (3 - 2 * t)
        return (out * (1 - t[:, None]) + np.asarray(self.neck, np.float32) * t[:, None]).astype(np.float32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, np.float64).reshape(1, -1, 3))[0]


def _discs(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]] + 0.5
    out = np.zeros(shape, bool)
    for x, y in centres:
        out |= (cols - x) ** 2 + (rows - y) ** 2 <= radius ** 2
    return out


def skin_regions(alpha: np.ndarray, landmarks: np.ndarray, cloth: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """bool [S, S] masks "forehead", "cheeks", "neck" of the crop (landmarks [478, 2|3] crop px)."""
    s = alpha.shape[0]
    lm = np.asarray(landmarks, np.float64)[:, :2]
    width = max(np.ptp(lm[:, 0]), 8.0)  # the face's width in pixels
    r = 0.045 * width
    out = {"forehead": _discs(alpha.shape, lm[list(FOREHEAD_IDS)], r) & alpha,
           "cheeks": _discs(alpha.shape, lm[list(CHEEK_IDS)], r) & alpha}
    chin = lm[CHIN_ID]
    (x0, _), (x1, _) = lm[JAW_IDS[0]], lm[JAW_IDS[1]]
    lo, hi = min(x0, x1), max(x0, x1)
    lo, hi = lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)
    rows, cols = np.mgrid[:s, :s] + 0.5
    band = (rows > chin[1] + 0.08 * width) & (rows < chin[1] + 0.30 * width) & (cols > lo) & (cols < hi)
    neck = band & alpha
    if cloth is not None:
        neck &= ~cloth
    out["neck"] = neck
    return out


def pixel_normals(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, frags) -> tuple[np.ndarray, np.ndarray]:
    """(normals [S, S, 3] unit world normals of the fitted head per crop pixel, covered bool [S, S])."""
    from recon.raster import interpolate

    n = interpolate(np.asarray(normals, np.float64), frags)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return n, frags.mask


def _fit_light(lum: np.ndarray, normals: np.ndarray, iterations: int = 4) -> np.ndarray | None:
    """SH-1 light [4] with lum ≈ [1, n] · a, Huber-IRLS; None when ill-posed."""
    x = np.concatenate([np.ones((len(lum), 1)), normals], 1)
    if len(lum) < 4 * MIN_PIXELS or np.linalg.matrix_rank(x.T @ x) < 4:
        return None
    w = np.ones(len(lum))
    a = None
    for _ in range(iterations):
        xw = x * w[:, None]
        a = np.linalg.lstsq(xw.T @ x + 1e-6 * np.eye(4), xw.T @ lum, rcond=None)[0]
        res = np.abs(x @ a - lum)
        delta = 1.5 * max(np.median(res), 1e-4)
        w = np.minimum(1.0, delta / np.maximum(res, 1e-9))
    return a


def shading_field(crop: np.ndarray, skin: np.ndarray, normals_px: np.ndarray, covered: np.ndarray,
                  to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(shading [S, S] float32, light [4] | None): the photo's shading relative to a surface
    facing the camera (1 = as lit as the front of the face), fitted on the ``skin`` pixels.

    crop: [S, S, 3] 0..1; skin, covered: bool [S, S]; normals_px: [S, S, 3]; to_camera: [3]
    unit direction from the head toward the input camera. Outside the head (hair beyond the
    mesh, background) the nearest covered pixel's value, then a small blur so no edge shows.
    """
    sel = skin & covered
    lum = crop[sel] @ np.array([0.2126, 0.7152, 0.0722])
    light = _fit_light(lum, normals_px[sel])
    if light is None:
        return np.ones(crop.shape[:2], np.float32), None
    ref = light[0] + light[1:] @ to_camera
    if not ref > 1e-3 or not covered.any():
        return np.ones(crop.shape[:2], np.float32), None
    shade = (light[0] + normals_px @ light[1:]) / ref
    # No extrapolation: a light fitted on the face says nothing about the crown or the nape
    # beyond the shading the skin pixels themselves span.
    lo, hi = np.percentile(shade[sel], [2, 98])
    return _finish(shade, covered, max(lo, 1 / MAX_GAIN), min(max(hi, 1.0), MAX_GAIN)), light


def _finish(shade: np.ndarray, covered: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clamp, carry the nearest covered value outside the head, blur a little: [S, S] float32."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    shade = np.clip(shade, lo, hi)
    if not covered.any():
        return np.ones(shade.shape, np.float32)
    _, (ri, ci) = distance_transform_edt(~covered, return_indices=True)
    shade = np.where(covered, shade, shade[ri, ci])
    return gaussian_filter(shade, 1.5).astype(np.float32)


def shading_from_reference(normals_px: np.ndarray, covered: np.ndarray, seen: np.ndarray, normals: np.ndarray,
                           albedo: np.ndarray) -> np.ndarray | None:
    """[S, S] shading of a further photo relative to known albedo (the input view's de-shaded
    colours): its luminance over the albedo's at surface points both see, fitted by the same
    SH-1 light (exposure included), so the photo can be de-shaded onto the input view's scale.

    seen: [N, 3] the photo's colours at the points; normals: [N, 3]; albedo: [N, 3]. None: too few points.
    """
    w = np.array([0.2126, 0.7152, 0.0722])
    ratio = (np.asarray(seen) @ w) / np.maximum(np.asarray(albedo) @ w, 1e-3)
    ok = np.isfinite(ratio) & (ratio > 0.05) & (ratio < 5)
    light = _fit_light(ratio[ok], np.asarray(normals)[ok])
    if light is None:
        return None
    shade = light[0] + normals_px @ light[1:]
    lo, hi = np.percentile(ratio[ok], [2, 98])
    # the same bounds as the input view's: a wider gain blows skin out to white at the rim
    return _finish(shade, covered, max(lo, 1 / MAX_GAIN), min(hi, MAX_GAIN))


def _robust_median(lab: np.ndarray) -> np.ndarray | None:
    """Lab median of the pixels within ``OUTLIER_DELTA_E`` of the first median (two passes)."""
    if len(lab) < MIN_PIXELS:
        return None
    med = np.median(lab, axis=0)
    keep = np.linalg.norm(lab - med, axis=1) < OUTLIER_DELTA_E
    return np.median(lab[keep], axis=0) if keep.sum() >= MIN_PIXELS else med


def region_colours(crop: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """Robust Lab median [3] of each region's pixels (None where too few)."""
    return {k: _robust_median(_lab(crop[m])) for k, m in regions.items()}


def chin_height(vertices: np.ndarray, normals: np.ndarray, camera, landmarks: np.ndarray) -> float | None:
    """z of the front-facing vertex whose projection is nearest the chin landmark (metres)."""
    v = np.asarray(vertices, np.float64)
    xy, _ = camera.project(v)
    facing = np.einsum("nk,nk->n", np.asarray(normals), camera.center - v) > 0
    if not facing.any():
        return None
    d = np.linalg.norm(xy - np.asarray(landmarks, np.float64)[CHIN_ID, :2], axis=1)
    d[~facing] = np.inf
    return float(v[int(np.argmin(d)), 2])


def estimate(crop: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray, normals_px: np.ndarray,
             covered: np.ndarray, camera, cloth: np.ndarray | None = None,
             chin_z: float | None = None) -> tuple[SkinTone, np.ndarray]:
    """(skin tone, de-shaded crop [S, S, 3]) from the crop; see the module docstring."""
    from skimage.color import lab2rgb

    regions = skin_regions(alpha, landmarks, cloth)
    face_px = regions["forehead"] | regions["cheeks"]
    to_cam = camera.center / max(np.linalg.norm(camera.center), 1e-9)
    shade, light = shading_field(crop, face_px | regions["neck"], normals_px, covered, to_cam)
    # Only skin-coloured pixels are de-shaded: the light is fitted on skin, and hair, hats or
    # clothes (other materials, other highlights) keep the colours the photo shows.
    raw = _robust_median(_lab(crop[face_px]))
    if raw is not None:
        d = np.linalg.norm(_lab(crop.reshape(-1, 3)) - raw, axis=1).reshape(shade.shape)
        t = np.clip((d - SKIN_LIKE_DELTA_E[0]) / (SKIN_LIKE_DELTA_E[1] - SKIN_LIKE_DELTA_E[0]), 0, 1)
        shade = 1 + (1 - t * t * (3 - 2 * t)) * (shade - 1)
    flat = np.clip(crop / shade[..., None], 0, 1).astype(np.float32)
    med = region_colours(flat, {"face": face_px, "neck": regions["neck"]})
    if med["face"] is None:
        raise ValueError("too few skin pixels on the forehead and cheeks")
    face = lab2rgb(med["face"][None, None])[0, 0].astype(np.float32)
    neck = face if med["neck"] is None else lab2rgb(med["neck"][None, None])[0, 0].astype(np.float32)
    counts = {k: int(m.sum()) for k, m in regions.items()}
    log.info("skin: face %s neck %s (pixels %s, light %s)", np.round(face, 3), np.round(neck, 3), counts,
             None if light is None else np.round(light, 3))
    return SkinTone(face, neck, chin_z, counts, light), flat
