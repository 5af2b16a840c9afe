"""Glasses found from the 478 face landmarks and the image's own edges, taken out of the crop.

No shipped model knows glasses (mediapipe 0.10.21: face detection/mesh, iris, selfie
segmenter, pose, hands; dlib: face detector, 5/68-point landmarks, descriptor), so the test
is built on the landmarks: a frame is a thin, continuous contour in three places where a
bare face has none — across the nose bridge between the inner eye corners, and along each
lower rim, parallel to the lower eyelid a third to nine tenths of an eye width below it.
Each place is resampled into a band (rows = offsets across the contour, columns = along
it), and the best continuous path (one row of drift per column, dynamic programming)
through the band's luminance steps is found: its mean step, relative to the skin's
luminance, is the place's score. All three must clear ``FRAME_SCORE`` (bridge and both
rims): the bare bundled portrait scores ≤ 0.032, the project's synthetic heads ≤ 0.065 in
any one place and ≤ 0.05 in their lowest (up to 45° of yaw), Grace Hopper's cat-eye
glasses 0.098–0.14 (README, "What the embedded default can and cannot do").
Sunglasses: the middle of both lenses (where the eye is) dark and flat relative to the skin (``LENS_DARK``,
``LENS_FLAT``); then the lenses leave the matte (the projection fills them like unseen
skin) — the eyes behind them are not seen.

The frame's pixels (thin dark or coloured lines around the eyes, the bridge and the
temples towards the ears) are those that differ from a median-filtered copy of the crop
(an eye width wide) by more than ``LINE_RESIDUAL`` of the skin's luminance inside the
glasses' zone, in parts at least ``MIN_EXTENT`` eye widths long, the eyes excepted and in
the brows only what is far from the brows' colour; they are inpainted from their
surroundings (``cv2.inpaint``, Telea) so neither the texture nor the fill carries them. Limits (README): rimless and
half-rim frames without a lower rim, clear frames on light skin, and frames seen from the
side are not found; a frame that runs through the brows stays where the brows are.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: mediapipe's lower eyelid contours (outer → inner corner) of the subject's right and left eye.
RIGHT_LOWER_LID = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_LOWER_LID = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
CHEEK_IDS = (50, 280, 205, 425)
#: Face-oval points at the ears' height (subject's right, left): where the temples run to.
SIDE_IDS = (127, 356)

#: A place counts as framed when its contour's mean luminance step is this share of the skin's luminance.
FRAME_SCORE = 0.08
#: Sunglasses: both lenses' mean luminance below this share of the skin's ...
LENS_DARK = 0.4
#: ... and their spread (std) below this share of it.
LENS_FLAT = 0.12
#: Around dark lenses, what is this far (CIE76) from the skin's colour is their rim.
RIM_DELTA_E = 20.0
#: A part of the frame is at least this many eye widths long or high (shorter: a wrinkle, a pore).
MIN_EXTENT = 0.6
#: Inside the brows a frame pixel is also this far (CIE76) from the brows' median colour.
BROW_DELTA_E = 25.0
#: A frame pixel differs from the median-filtered crop by this share of the skin's luminance.
LINE_RESIDUAL = 0.2


@dataclass(frozen=True)
class Glasses:
    """scores: the contour score of "bridge", "right" and "left" rims and the lenses'
    darkness; found: a frame is there; sunglasses: its lenses are dark; frame: bool [S, S]
    pixels inpainted (with the lenses of sunglasses); lenses: bool [S, S] pixels left out
    of the matte (sunglasses only)."""

    scores: dict
    found: bool
    sunglasses: bool
    frame: np.ndarray
    lenses: np.ndarray


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _resample(points: np.ndarray, n: int) -> np.ndarray:
    """n points evenly spaced along the polyline ``points`` [K, 2]."""
    d = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    t = np.linspace(0.0, d[-1], n)
    return np.stack([np.interp(t, d, points[:, 0]), np.interp(t, d, points[:, 1])], 1)


def _band(lum: np.ndarray, base: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[len(offsets), len(base)]: ``lum`` sampled at base points moved down by each offset (pixels)."""
    xs = np.repeat(base[None, :, 0], len(offsets), 0).astype(np.float32)
    ys = (base[None, :, 1] + offsets[:, None]).astype(np.float32)
    return cv2.remap(lum, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def best_path(steps: np.ndarray) -> float:
    """Mean of the largest-sum path through ``steps`` [R, C] from the first column to the last
    that moves at most one row per column (a continuous contour across the band)."""
    acc = steps[:, 0].astype(np.float64)
    for c in range(1, steps.shape[1]):
        up = np.r_[-np.inf, acc[:-1]]
        down = np.r_[acc[1:], -np.inf]
        acc = np.maximum(np.maximum(up, acc), down) + steps[:, c]
    return float(acc.max() / steps.shape[1])


def _contour(lum: np.ndarray, base: np.ndarray, offsets: np.ndarray) -> float:
    band = _band(lum, base, offsets)
    return best_path(np.abs(np.diff(band, axis=0)))


def _skin_luminance(lum: np.ndarray, lm: np.ndarray, eye: float) -> float:
    s = lum.shape[0]
    vals = []
    r = max(1, int(round(0.25 * eye)))
    for i in CHEEK_IDS:
        x, y = (int(np.clip(round(v), 0, s - 1)) for v in lm[i, :2])
        vals.append(lum[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].ravel())
    return max(float(np.median(np.concatenate(vals))), 0.05)


def _polygon(shape, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points[:, :2]).astype(np.int32)], 1)
    return mask.astype(bool)


def _lens_masks(shape, lm: np.ndarray, eye: float, scale: float = 1.0) -> list[np.ndarray]:
    """The area a lens covers around each eye: an ellipse 1.6 × 1.2 eye widths (× ``scale``),
    a little below the eye."""
    out = []
    for outer, inner in ((33, 133), (263, 362)):
        c = (lm[outer, :2] + lm[inner, :2]) / 2 + np.array([0.0, 0.1 * eye * scale])
        m = np.zeros(shape, np.uint8)
        axes = (int(round(0.8 * eye * scale)), int(round(0.6 * eye * scale)))
        cv2.ellipse(m, (int(round(c[0])), int(round(c[1]))), axes, 0, 0, 360, 1, -1)
        out.append(m.astype(bool))
    return out


def detect(rgb: np.ndarray, landmarks: np.ndarray) -> Glasses:
    """Look for glasses in a crop [S, S, 3] uint8 with its 478 landmarks [478, 2|3] (crop pixels)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    shape = rgb.shape[:2]
    eye = float(np.mean([np.linalg.norm(lm[33] - lm[133]), np.linalg.norm(lm[263] - lm[362])]))
    eye = max(eye, 4.0)
    raw = _luminance(rgb)
    lum = cv2.GaussianBlur(raw, (0, 0), max(eye / 36.0, 0.5))
    skin = _skin_luminance(raw, lm, eye)
    step = max(eye / 40.0, 0.5)
    scores = {}
    for name, ids in (("right", RIGHT_LOWER_LID), ("left", LEFT_LOWER_LID)):
        base = _resample(lm[list(ids)], 30)[3:-3]  # the lid's middle: the corners curve away
        scores[name] = _contour(lum, base, np.arange(0.15 * eye, 0.9 * eye, step)) / skin
    a, b = lm[133], lm[362]
    base = np.stack([np.linspace(a[0], b[0], 24), np.linspace(a[1], b[1], 24)], 1)[6:-6]
    scores["bridge"] = _contour(lum, base, np.arange(-0.7 * eye, 0.3 * eye, step)) / skin
    found = min(scores["bridge"], scores["right"], scores["left"]) >= FRAME_SCORE
    lenses = _lens_masks(shape, lm, eye)
    eyes = [_polygon(shape, lm[list(ids)]) for ids in (RIGHT_EYE, LEFT_EYE)]
    dark, flat = [], []
    for lens in _lens_masks(shape, lm, eye, 0.6):  # the middle of each lens: the eye and the lids
        vals = raw[lens]
        dark.append(float(vals.mean()) / skin)
        flat.append(float(vals.std()) / skin)
    scores["lens_dark"] = max(dark)
    scores["lens_spread"] = max(flat)
    sunglasses = scores["lens_dark"] < LENS_DARK and scores["lens_spread"] < LENS_FLAT
    found = found or sunglasses
    empty = np.zeros(shape, bool)
    if not found:
        return Glasses(scores, False, False, empty, empty)
    lens_px = empty
    seen = rgb
    if sunglasses:
        lens_px = (lenses[0] | lenses[1]) & (raw < LENS_DARK * 1.5 * skin)
        lens_px = _with_rims(rgb, lm, eye, lens_px)
        seen = inpaint(rgb, lens_px, eye)  # the bridge and temples stand out against skin, not a dark lens
    frame = _frame_pixels(seen, lm, eye, skin, lenses, eyes, lens_px)
    # The lenses are inpainted with the frame (so the frame fills from the skin around it, not
    # from the dark lens) and leave the matte besides.
    return Glasses(scores, True, sunglasses, frame | lens_px, lens_px)


def _with_rims(rgb: np.ndarray, lm: np.ndarray, eye: float, lens: np.ndarray) -> np.ndarray:
    """The dark lenses grown by what is not skin-coloured around them (their rims), up to a
    quarter of an eye width: bool [S, S]."""
    lab = cv2.cvtColor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    r = max(1, int(round(0.25 * eye)))
    patches = [lab[max(0, int(y) - r):int(y) + r + 1, max(0, int(x) - r):int(x) + r + 1].reshape(-1, 3)
               for x, y in lm[list(CHEEK_IDS)]]
    skin = np.median(np.concatenate(patches), axis=0)
    k = 2 * r + 1
    near = cv2.dilate(lens.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    grown = (near & (np.linalg.norm(lab - skin, axis=-1) > RIM_DELTA_E)) | lens
    n, labels = cv2.connectedComponents(grown.astype(np.uint8), connectivity=8)
    ids = np.unique(labels[lens])
    out = np.isin(labels, ids[ids > 0])
    return cv2.dilate(out.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _zone(shape, lm: np.ndarray, eye: float, lenses) -> np.ndarray:
    """Where a frame can be: the lenses grown by a third of an eye width, the bridge, the temples."""
    k = max(3, int(round(eye / 3)) | 1)
    zone = cv2.dilate((lenses[0] | lenses[1]).astype(np.uint8), np.ones((k, k), np.uint8))
    a, b = lm[133], lm[362]
    h = int(round(0.45 * eye))
    x0, x1 = int(min(a[0], b[0])), int(max(a[0], b[0])) + 1
    y = int(round((a[1] + b[1]) / 2))
    zone[max(0, y - 2 * h):y + h // 2, max(0, x0):x1] = 1
    for outer, side in ((33, SIDE_IDS[0]), (263, SIDE_IDS[1])):
        p, q = lm[outer], lm[side]
        q = q + 0.25 * (q - p)  # on past the face's edge, towards the ear
        cv2.line(zone, (int(p[0]), int(p[1] - 0.25 * eye)), (int(q[0]), int(q[1] - 0.15 * eye)), 1,
                 max(2, int(round(0.4 * eye))))
    return zone.astype(bool)


def _frame_pixels(rgb, lm, eye, skin, lenses, eyes, joined=None) -> np.ndarray:
    """bool [S, S]: thin structures (any colour channel off its median-filtered surroundings) in the
    zone, in long parts; joined: bool [S, S] already taken (dark lenses) that parts may join."""
    k = max(3, int(round(eye)) | 1)  # wider than twice a thick frame: the median is the skin behind it
    smooth = cv2.medianBlur(np.ascontiguousarray(rgb), k).astype(np.float32)
    residual = np.abs(rgb.astype(np.float32) - smooth).max(-1) / 255.0
    keep = np.zeros(rgb.shape[:2], np.uint8)
    g = max(1, int(round(eye / 16)))
    for m in eyes:
        keep |= cv2.dilate(m.astype(np.uint8), np.ones((2 * g + 1, 2 * g + 1), np.uint8))
    keep = keep.astype(bool)
    brows = _polygon(rgb.shape[:2], lm[list(RIGHT_BROW)]) | _polygon(rgb.shape[:2], lm[list(LEFT_BROW)])
    # In the brows only what is far from the brows' own colour is frame (a dark frame on dark brows stays).
    lab = cv2.cvtColor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    unlike_brow = np.ones(rgb.shape[:2], bool)
    if brows.sum() >= 8:
        # the brows' colour from their quieter half: a frame across them is their strongest contrast
        quiet = brows & (residual <= np.percentile(residual[brows], 50))
        unlike_brow = np.linalg.norm(lab - np.median(lab[quiet], axis=0), axis=-1) > BROW_DELTA_E
    frame = (residual > LINE_RESIDUAL * skin) & _zone(rgb.shape[:2], lm, eye, lenses) & ~keep
    frame &= ~brows | unlike_brow
    # long parts, counting what is joined to the dark lenses (their temples) as long
    frame = _long_parts(frame if joined is None else frame | joined, MIN_EXTENT * eye) & frame
    g = max(1, int(round(eye / 16)))  # the frame's soft edge too, so the inpainting starts on skin
    frame = cv2.dilate(frame.astype(np.uint8), np.ones((2 * g + 1, 2 * g + 1), np.uint8)).astype(bool)
    return frame & ~keep & (~brows | unlike_brow)


def _long_parts(mask: np.ndarray, extent: float) -> np.ndarray:
    """The connected parts of ``mask`` (after closing one-pixel gaps) at least ``extent`` pixels
    long or high: a frame is a long contour, wrinkles and pores are short."""
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    long = np.zeros(n, bool)
    long[1:] = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) >= extent
    return long[labels] & mask


def inpaint(rgb: np.ndarray, mask: np.ndarray, eye: float) -> np.ndarray:
    """The crop [S, S, 3] uint8 with ``mask`` filled from its surroundings (Telea)."""
    if not mask.any():
        return rgb
    return cv2.inpaint(np.ascontiguousarray(rgb), mask.astype(np.uint8), max(2.0, eye / 10.0), cv2.INPAINT_TELEA)


def eye_width(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, np.float64)[:, :2]
    return float(np.mean([np.linalg.norm(lm[33] - lm[133]), np.linalg.norm(lm[263] - lm[362])]))
