"""Hats found from the face landmarks and colour, taken out of the head's matte.

No shipped model segments hats (mediapipe's selfie segmenter counts a hat as person), so
the test is built on the landmarks and the crop's colours:

1. skin = the median colour of the cheeks and mid-forehead; hair = the median colour of
   the matte just outside the face at eye height that is not skin (no such hair: no decision,
   the photo is left alone — a bald head under a hat, or hair hidden, is not judged);
2. in every column over the forehead (between mediapipe's points 54 and 284), going up from
   the brows, the first row where the colour stops being skin is the forehead's upper edge;
3. it is a brim when those edges form a smooth line across the forehead (a quadratic fits
   them within ``BRIM_RESIDUAL`` of the face width over at least ``BRIM_COVERAGE`` of the
   columns) *and* what lies above it is neither skin nor hair: its median colour is more
   than ``HAT_DELTA_E`` from both in CIE Lab, and at most ``MAX_HAIR_SHARE`` of its pixels
   are close to the hair. Dark hair over a light forehead, bangs included, is
   hair-coloured and never a hat; a hat of the hair's colour is not found.

The hat = the matte above the brim line (grown by a small margin), with the hat-coloured
pixels joined to it below the line where its sides come down lower; the projection then
fills the skull with its hair/skin fill, as for any unseen part.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .glasses import CHEEK_IDS, SIDE_IDS  # cheeks (skin colour); face-oval points at the ears

#: Forehead points (its skin colour).
FOREHEAD_IDS = (151, 108, 337, 9)
#: Columns over the forehead run between these face-oval points (subject's right, left).
FOREHEAD_SPAN = (54, 284)
#: Upper brow points: the search for the forehead's upper edge starts above them.
BROW_TOP_IDS = (105, 334, 66, 296)

#: Lab distance (lightness at half weight) within which a pixel counts as the skin's colour.
SKIN_DELTA_E = 16.0
#: A hat's colour is at least this far (Lab) from both the skin and the hair.
HAT_DELTA_E = 22.0
#: Weight of the lightness difference between the hair beside the face and what covers the forehead.
HAIR_LIGHTNESS = 0.4
#: ... and at most this share of its pixels is within half that distance of the hair.
MAX_HAIR_SHARE = 0.3
#: The brim's edges fit a quadratic within this share of the face width (RMS) ...
BRIM_RESIDUAL = 0.03
#: ... over at least this share of the forehead's columns.
BRIM_COVERAGE = 0.8


@dataclass(frozen=True)
class Hat:
    """found; mask: bool [S, S] the hat's pixels; info: what was measured (colours, fit)."""

    found: bool
    mask: np.ndarray
    info: dict


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _distance(lab: np.ndarray, ref: np.ndarray, lightness: float = 0.5) -> np.ndarray:
    """CIE76 with the lightness difference weighted by ``lightness`` (shading changes it most)."""
    d = lab - ref
    return np.sqrt((lightness * d[..., 0]) ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)


def _patches(lab: np.ndarray, points: np.ndarray, r: int) -> np.ndarray:
    s = lab.shape[0]
    out = []
    for x, y in np.round(points).astype(int):
        x, y = int(np.clip(x, 0, s - 1)), int(np.clip(y, 0, s - 1))
        out.append(lab[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3))
    return np.concatenate(out)


def _side_hair(lab, fg, lm, skin, width) -> np.ndarray | None:
    """Median Lab of the matte's non-skin pixels just outside the face at temple height, or None."""
    s = lab.shape[0]
    r = max(2, int(round(0.08 * width)))
    pts = []
    centre_x = (lm[SIDE_IDS[0], 0] + lm[SIDE_IDS[1], 0]) / 2
    for i in SIDE_IDS:
        x, y = lm[i]
        out = np.sign(x - centre_x) * 0.1 * width
        for dy in (-0.05, 0.1):
            pts.append((x + out, y + dy * width))
    region = np.zeros((s, s), bool)
    for x, y in np.round(pts).astype(int):
        region[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = True
    sel = region & fg & (_distance(lab, skin) > SKIN_DELTA_E)
    if sel.sum() < max(12, 0.15 * region.sum()):
        return None
    return np.median(lab[sel], axis=0)


def detect(rgb: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray) -> Hat:
    """Look for a hat in a crop [S, S, 3] uint8 with its matte [S, S] uint8 and 478 landmarks."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    s = rgb.shape[0]
    fg = alpha > 127
    empty = np.zeros((s, s), bool)
    width = float(np.linalg.norm(lm[SIDE_IDS[0]] - lm[SIDE_IDS[1]]))
    if width < 16:
        return Hat(False, empty, {"reason": "face too small"})
    lab = _lab(cv2.GaussianBlur(np.ascontiguousarray(rgb), (0, 0), max(width / 200, 0.5)))
    r = max(1, int(round(0.03 * width)))
    skin = np.median(_patches(lab, lm[list(CHEEK_IDS + FOREHEAD_IDS)], r), axis=0)
    hair = _side_hair(lab, fg, lm, skin, width)
    info = {"skin_lab": np.round(skin, 1).tolist()}
    if hair is None:
        info["reason"] = "no hair beside the face to compare with"
        return Hat(False, empty, info)
    info["hair_lab"] = np.round(hair, 1).tolist()
    x0, x1 = sorted((int(round(lm[FOREHEAD_SPAN[0], 0])), int(round(lm[FOREHEAD_SPAN[1], 0]))))
    x0, x1 = max(x0, 0), min(x1, s - 1)
    brow = int(round(min(lm[list(BROW_TOP_IDS), 1]))) - max(1, int(round(0.02 * width)))
    top = max(0, int(round(lm[10, 1] - 0.45 * width)))
    if x1 - x0 < 8 or brow - top < 8:
        return Hat(False, empty, {**info, "reason": "no forehead in the crop"})
    not_skin = (_distance(lab, skin) > SKIN_DELTA_E) | ~fg  # [S, S]
    run = max(2, int(round(0.015 * width)))
    skip = max(2, int(round(0.06 * width)))
    cols, edges = [], []
    for x in range(x0, x1 + 1):
        column = not_skin[top:brow + 1, x][::-1]  # upward from the brows
        # the first row where `run` non-skin pixels in a row begin
        skin_rows = np.nonzero(~column[:skip + 1])[0]  # brow hairs may reach above the brow points
        if not len(skin_rows):  # no skin at all above the brows: the edge is there
            cols.append(x)
            edges.append(brow + 0.5)
            continue
        start = int(skin_rows[0])
        kernel = np.convolve(column[start:].astype(np.int32), np.ones(run, np.int32), "valid")
        hits = np.nonzero(kernel == run)[0]
        if len(hits):
            cols.append(x)
            edges.append(brow - start - hits[0] + 0.5)
    coverage = len(cols) / (x1 - x0 + 1)
    info["coverage"] = round(coverage, 3)
    if coverage < BRIM_COVERAGE:
        info["reason"] = "the forehead's upper edge is not a line across it"
        return Hat(False, empty, info)
    xs, ys = np.asarray(cols, np.float64), np.asarray(edges, np.float64)
    u = (xs - xs.mean()) / width
    coef = np.polyfit(u, ys, 2)
    rms = float(np.sqrt(np.mean((np.polyval(coef, u) - ys) ** 2))) / width
    info["residual"] = round(rms, 4)
    # what lies above the edge: a band a tenth of the face width high, in the matte, clear of
    # the edge's own transition (skin shading into hair or hat)
    band = np.zeros((s, s), bool)
    h = max(2, int(round(0.1 * width)))
    gap = max(run, int(round(0.03 * width)))
    for x, y in zip(cols, ys):
        y = int(round(y))
        band[max(0, y - gap - h):max(0, y - gap), x] = True
    band &= fg
    if band.sum() < 12:
        return Hat(False, empty, {**info, "reason": "nothing above the forehead"})
    above = np.median(lab[band], axis=0)
    info["above_lab"] = np.round(above, 1).tolist()
    # hair is lit from above: on top it is lighter than beside the face, so lightness counts less
    d_skin, d_hair = float(_distance(above, skin)), float(_distance(above, hair, HAIR_LIGHTNESS))
    info["delta_e_skin"], info["delta_e_hair"] = round(d_skin, 1), round(d_hair, 1)
    hairlike = float((_distance(lab[band], hair, HAIR_LIGHTNESS) < HAT_DELTA_E / 2).mean())
    info["hair_share"] = round(hairlike, 3)
    if rms > BRIM_RESIDUAL:
        info["reason"] = "the forehead's upper edge is not smooth"
        return Hat(False, empty, info)
    if min(d_skin, d_hair) < HAT_DELTA_E or hairlike > MAX_HAIR_SHARE:
        info["reason"] = "what covers the forehead has the hair's or the skin's colour"
        return Hat(False, empty, info)
    # The hat: the matte above the brim line, the line extended across the crop.
    grid = (np.arange(s, dtype=np.float64) - xs.mean()) / width
    line = np.polyval(coef, np.clip(grid, u.min(), u.max())) + max(1.0, 0.01 * width)
    rows = np.arange(s)[:, None]
    mask = fg & (rows < line[None, :])
    # Its sides often come down lower than the brim over the forehead: the hat-coloured
    # pixels below the line (down to a fifth of the face width) joined to it count too.
    like = (fg & (rows < line.max() + 0.2 * width) & (_distance(lab, above) < HAT_DELTA_E / 2)
            & (_distance(lab, skin) > HAT_DELTA_E) & (_distance(lab, hair, HAIR_LIGHTNESS) > HAT_DELTA_E))
    n, labels = cv2.connectedComponents((mask | like).astype(np.uint8), connectivity=8)
    joined = np.unique(labels[mask])
    mask = np.isin(labels, joined[joined > 0])
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & fg
    info["share"] = round(float(mask.mean()), 4)
    return Hat(True, mask, info)
