"""Ears shaped by the photo's silhouette where a near-frontal photo shows them (template only).

mediapipe's 478 landmarks have none on the ears, so the landmark fit (``fit.py``) leaves
the template's ears as sculpted (``_template_shape._ears``: a tilted, flattened ellipsoid
standing ~20° off the skull). In a near-frontal photo the ears stand out of the head's
silhouette at the sides, between eye and nose-bottom height. This module measures that:

1. Region: a smooth per-vertex weight on the template's rest shape, 1 on the ear (≥ 8 mm
   outside the sculpted body, ``_template_shape._body``), 0 on the skull and the face.
2. Model: per side, the ear region rotated about a vertical axis through its front root
   (the back edge swings out: ``protrusion_deg`` = the template's 20° + the rotation) and
   scaled about that root, blended by the weight; applied to the fitted vertices.
3. Evidence: the fitted head without its ears and the ear region alone are sampled densely
   (points on their triangles) and projected by the fitted camera; per crop row between
   the eye corners' and the nose bottom's heights, the person's matte (``crop[..., 3]``) is
   followed outward from the ear-less head's edge. The pixels it covers beyond that edge are
   classified against the cheeks' skin colour (CIE Lab): mostly skin → the ear is visible
   and (protrusion, scale) is searched on a grid for the row extents that match the matte;
   mostly not skin (hair, a hat, a hand) → "hidden"; a turned or tilted head, too few rows,
   too little extent or a poor match → "no_evidence". The template's ear stays unless fitted.

Conservative by design: a wrong ear is worse than the template's, so every doubt keeps it.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: The template's own protrusion (``_template_shape._ears`` tilts the ear by 0.35 rad).
TEMPLATE_DEG = math.degrees(0.35)
#: Plausible range of the fitted protrusion (degrees) and scale.
ANGLE_RANGE = (5.0, 35.0)
SCALE_RANGE = (0.8, 1.25)
#: The ear's front root (the vertical rotation axis), template rest shape, x = ± this.
ROOT = np.array([0.0755, -0.011, -0.012])
#: Cheek landmarks whose colour is the skin reference.
CHEEK_IDS = np.array([50, 280, 205, 425, 187, 411, 123, 352])


@dataclass(frozen=True)
class EarsConfig:
    """Thresholds of the ear evidence (pixels are at a 512-px crop)."""

    max_yaw_deg: float = 12.0
    """Above this head yaw (or roll) the side silhouette is not the ear's profile."""
    min_rows: int = 8
    """Usable crop rows (2-px bins) needed per side."""
    min_excess_px: float = -3.0
    """Mean extent of the matte beyond the ear-less head (after the width calibration) below
    which nothing is decided (the matte ends inside the head: a poor fit or a cut matte)."""
    band_px: float = 40.0
    """How far beyond the ear-less head the matte is followed (longer runs: hair/shoulder, row unused)."""
    skin_fitted: float = 0.6
    """Fraction of skin-coloured matte pixels beyond the head above which the ear is visible."""
    skin_hidden: float = 0.3
    """… and below which it is hidden (hair or another cover)."""
    max_offset_px: float = 6.0
    """Largest width error of the fitted head (matte edge − head edge at the cheeks below the
    ear) that is corrected; beyond it the head's side is too uncertain to read an ear from."""
    max_shift_px: float = 12.0
    """The ear's height is searched this far up and down: the landmarks fix the head's pitch
    poorly, and the ears, ~8 cm behind the face, move ~7 mm per 5° of pitch."""
    scale_cost: float = 0.3
    """Cost (px RMS) of scaling the ear by 1.25 (or 0.8): width alone barely tells the size."""
    max_rms_px: float = 4.0
    """RMS row-extent mismatch of the best (protrusion, scale) above which the fit is not used."""


def ear_weights(rest: np.ndarray) -> np.ndarray:
    """[V] in [0, 1]: how much each rest-shape vertex belongs to an ear (smooth at the root)."""
    from ._template_shape import _body, _ears

    p = np.asarray(rest, np.float64)
    t = np.clip(_body(p) / 0.008, 0.0, 1.0)
    w = t * t * (3 - 2 * t)
    return np.where(_ears(p) < 0.01, w, 0.0)


def _sides(rest: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """{"left": bool [V], "right": bool [V]}: the subject's left ear is at +x (Blender world)."""
    return {"left": (rest[:, 0] > 0) & (weights > 0), "right": (rest[:, 0] < 0) & (weights > 0)}


def _transform(points: np.ndarray, pivot: np.ndarray, sign: float, delta_deg, scale) -> np.ndarray:
    """Ear points [..., N, 3] rotated by ``delta_deg`` (back edge outward) and scaled about ``pivot``.

    delta_deg, scale: scalars or arrays [C] (then the result is [C, N, 3])."""
    a = np.radians(np.asarray(delta_deg, np.float64)) * -sign  # +x ear: back (+y) moves to +x
    s = np.asarray(scale, np.float64)
    c, sn = np.cos(a)[..., None], np.sin(a)[..., None]
    q = points - pivot
    x = c * q[..., 0] - sn * q[..., 1]
    y = sn * q[..., 0] + c * q[..., 1]
    z = np.broadcast_to(q[..., 2], x.shape)
    return np.stack([x, y, z], -1) * s[..., None, None] + pivot


def _pivot(vertices: np.ndarray, rest: np.ndarray, region: np.ndarray, sign: float) -> np.ndarray:
    """The root on the fitted head: the rest root moved with the ear region (shape modes are smooth)."""
    return ROOT * np.array([sign, 1.0, 1.0]) + (vertices[region] - rest[region]).mean(0)


def deform(vertices: np.ndarray, rest: np.ndarray, ears: dict, weights: np.ndarray | None = None) -> np.ndarray:
    """The head with its ears set to ``ears`` = {"left"/"right": (protrusion_deg, scale)} (missing: unchanged).

    vertices: [V, 3] fitted (or rest) vertices of the template; rest: [V, 3] its rest shape
    (the weights and the root are defined there). Returns a new [V, 3] array (same dtype).
    """
    w = ear_weights(rest) if weights is None else weights
    out = np.asarray(vertices, np.float64).copy()
    for side, region in _sides(rest, w).items():
        if side not in ears:
            continue
        angle, scale = ears[side]
        sign = 1.0 if side == "left" else -1.0
        pivot = _pivot(out, rest, region, sign)
        moved = _transform(out[region], pivot, sign, float(angle) - TEMPLATE_DEG, float(scale))
        out[region] += w[region, None] * (moved - out[region])
    return out.astype(np.asarray(vertices).dtype)


def _samples(faces: np.ndarray, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric sample points on each triangle: (weights [S, 3], per-face repeat count S)."""
    ij = [(i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    b = np.array([(i / n, j / n, 1 - (i + j) / n) for i, j in ij])
    return b, len(b)


def _points(v: np.ndarray, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """[..., F·S, 3] points on the triangles ``faces`` of vertices [..., V, 3]."""
    tri = v[..., faces, :]  # [..., F, 3, 3]
    pts = np.einsum("sk,...fkc->...fsc", bary, tri)
    return pts.reshape(*pts.shape[:-3], -1, 3)


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, np.float64).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


def _skin_reference(crop: np.ndarray, lm: np.ndarray) -> np.ndarray | None:
    """Median Lab of 5×5 patches at the cheek landmarks (matte only), or None."""
    h, w = crop.shape[:2]
    px = []
    for x, y in np.rint(lm[CHEEK_IDS, :2]).astype(int):
        if 2 <= x < w - 2 and 2 <= y < h - 2:
            patch = crop[y - 2:y + 3, x - 2:x + 3]
            px.append(patch[patch[..., 3] > 127][:, :3])
    if not px or sum(len(p) for p in px) < 20:
        return None
    return np.median(_lab(np.concatenate(px)), axis=0)


def _is_skin(lab: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """bool [N]: like the cheeks' skin in CIE Lab: chroma within 14 and at least 40 % of the
    cheeks' (black and grey hair are greyer), hue within 18° (blond hair is yellower),
    lightness from 28 darker (ears are often shaded) to 15 lighter."""
    dab = np.hypot(lab[:, 1] - ref[1], lab[:, 2] - ref[2])
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    dhue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1]) - math.atan2(ref[2], ref[1]))
    dhue = np.abs((dhue + 180.0) % 360.0 - 180.0)
    dl = lab[:, 0] - ref[0]
    return ((dab < 14.0) & (chroma >= 0.4 * math.hypot(ref[1], ref[2])) & (dhue < 18.0)
            & (dl > -28.0) & (dl < 15.0))


def _row_extent(u: np.ndarray, v: np.ndarray, rows: np.ndarray, outward: float) -> np.ndarray:
    """Per row bin (edges ``rows``), the outermost u (× ``outward``) of the points; −inf where none.

    u, v: [C, N] (C candidate shapes). Returns [C, R]."""
    step = rows[1] - rows[0]  # uniform bins
    idx = np.floor((v - rows[0]) / step).astype(np.int64)
    ok = (idx >= 0) & (idx < len(rows) - 1)
    out = np.full((u.shape[0], len(rows) - 1), -np.inf)
    cand = np.broadcast_to(np.arange(u.shape[0])[:, None], u.shape)
    np.maximum.at(out, (cand[ok], idx[ok]), (u * outward)[ok])
    return out


def _excess(crop: np.ndarray, rows: np.ndarray, base: np.ndarray, outward: float,
            band: int) -> tuple[np.ndarray, list]:
    """Per row bin, how far (px, sub-pixel from the soft matte, may be negative) the matte's
    contiguous run reaches beyond the ear-less head's edge ``base``; NaN where unusable.
    Also the RGB of the solid matte pixels beyond the edge and of the 3 px just inside it
    (lists of [n, 3])."""
    size = crop.shape[0]
    centres = 0.5 * (rows[:-1] + rows[1:])
    meas = np.full(len(centres), np.nan)
    beyond, rim = [], []
    margin = band // 2
    for i, (yc, b) in enumerate(zip(centres, base)):
        y = int(yc)
        if not np.isfinite(b) or not 0 <= y < size:
            continue
        # the row seen outward from the head: column j covers [j, j + 1) in u' = outward·u
        alpha = (crop[y, :, 3] if outward > 0 else crop[y, ::-1, 3]).astype(np.float64) / 255.0
        rgb = crop[y, :, :3] if outward > 0 else crop[y, ::-1, :3]
        edge = b if outward > 0 else size + b  # u' of the ear-less head's edge
        c0 = int(math.floor(edge)) - margin
        if c0 < 0 or c0 + margin + band + 1 >= size or alpha[c0] < 0.5:
            continue  # leaves the crop, or the matte does not reach near the head here
        run = alpha[c0:c0 + margin + band + 1] > 0.02
        n = int(np.argmin(run)) if not run.all() else len(run)
        if n >= len(run):
            continue  # runs on (hair, shoulder, a hand): no extent in this row
        meas[i] = c0 + float(alpha[c0:c0 + n].sum()) - edge
        out = np.arange(int(math.ceil(edge)), c0 + n)
        rim.append(rgb[np.arange(int(math.floor(edge)) - 3, int(math.floor(edge)))])
        out = out[alpha[out] > 0.5]
        if len(out):
            beyond.append(rgb[out])
    return meas, beyond, rim


def head_angles(camera) -> tuple[float, float]:
    """(yaw, pitch) in degrees of the camera seen from the head (0, 0 = straight in front)."""
    d = np.asarray(camera.center, np.float64)
    yaw = math.degrees(math.atan2(d[0], -d[1]))
    pitch = math.degrees(math.atan2(d[2], math.hypot(d[0], d[1])))
    return yaw, pitch


def fit_ears(crop: np.ndarray, landmarks: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
             rest: np.ndarray, camera, config: EarsConfig = EarsConfig()) -> tuple[np.ndarray, dict]:
    """Measure the ears in one photo and shape them: (vertices [V, 3], record for params.json).

    crop: [S, S, 4] uint8 RGBA (alpha = matte); landmarks: [478, 3] crop pixels;
    vertices: fitted template vertices; rest: the template's rest shape; camera: the fitted one.
    record: {"left"/"right": {"status": "fitted" | "hidden" | "no_evidence", "protrusion_deg",
    "scale", "reason", ...}, "seconds"}.
    """
    t0 = time.perf_counter()
    v = np.asarray(vertices, np.float64)
    rest = np.asarray(rest, np.float64)
    faces = np.asarray(faces, np.int64)
    lm = np.asarray(landmarks, np.float64)
    size = crop.shape[0]
    k = 512.0 / size  # thresholds are in pixels at 512
    template = {"protrusion_deg": round(TEMPLATE_DEG, 2), "scale": 1.0}
    record = {s: {"status": "no_evidence", **template} for s in ("left", "right")}

    def done(reason: str | None = None):
        if reason is not None:
            for s in ("left", "right"):
                record[s].setdefault("reason", reason)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        return vertices, record

    yaw, pitch = head_angles(camera)
    roll = math.degrees(math.atan2(lm[263, 1] - lm[33, 1], lm[263, 0] - lm[33, 0]))
    record["yaw_deg"], record["roll_deg"] = round(yaw, 1), round(roll, 1)
    if max(abs(yaw), abs(roll)) > config.max_yaw_deg or abs(pitch) > 2 * config.max_yaw_deg:
        return done(f"head turned (yaw {yaw:.0f}°, roll {roll:.0f}°, pitch {pitch:.0f}°): "
                    "the side silhouette is not the ears' profile")
    ref = _skin_reference(crop, lm)
    if ref is None:
        return done("no cheek skin in the matte to compare with")
    w = ear_weights(rest)
    ear_face = (w[faces] > 0).any(1)
    top = 0.5 * (lm[33, 1] + lm[263, 1])
    bottom = float(lm[2, 1])
    if not bottom - top > 8 / k:
        return done("eye and nose rows too close")
    rows = np.arange(top, bottom + 1e-6, 2.0 / k)
    mouth = 0.5 * (lm[61, 1] + lm[291, 1])
    cal_rows = np.arange(bottom + 0.35 * (mouth - bottom), mouth + 0.5 * (mouth - bottom) + 1e-6, 2.0 / k)
    bary, _ = _samples(faces)
    uv, _ = camera.project(_points(v, faces[~ear_face], bary))
    matte = crop[..., 3] > 127
    band = int(round(config.band_px / k))
    regions = _sides(rest, w)
    lab_cache = {}
    ear_faces_of = {s: faces[ear_face & np.isin(faces, np.nonzero(r)[0]).all(1)] for s, r in regions.items()}
    for side, region in regions.items():
        rec = record[side]
        sign = 1.0 if side == "left" else -1.0
        ear_uv, _ = camera.project(v[region])
        outward = 1.0 if ear_uv[:, 0].mean() > lm[1, 0] else -1.0  # which image side this ear is on
        base = _row_extent(uv[None, :, 0], uv[None, :, 1], rows, outward)[0]  # [R] outermost ear-less head
        meas, beyond_px, rim_px = _excess(crop, rows, base, outward, band)
        # the fitted head's own width error (the skull's side is not fitted by the landmarks):
        # the matte's edge against the ear-less head in the cheek rows below the ear
        cal, _, _ = _excess(crop, cal_rows, _row_extent(uv[None, :, 0], uv[None, :, 1], cal_rows, outward)[0],
                         outward, band)
        if np.isfinite(cal).sum() < 3:
            rec["reason"] = "no cheek silhouette below the ear to calibrate the head's width"
            continue
        offset = float(np.median(cal[np.isfinite(cal)]))
        rec["width_offset_px"] = round(offset * k, 2)
        if abs(offset) * k > config.max_offset_px:
            rec["reason"] = f"the fitted head's width is {offset * k:+.1f} px off the photo's cheeks"
            continue
        meas = meas - offset
        good = np.isfinite(meas)
        rec["rows"] = int(good.sum())
        if good.sum() < config.min_rows:
            rec["reason"] = f"{int(good.sum())} usable rows (matte runs on or leaves the crop)"
            continue
        excess = float(np.mean(meas[good])) * k
        rec["excess_px"] = round(excess, 2)
        if excess < config.min_excess_px:
            rec["reason"] = "the matte hardly extends beyond the head"
            continue
        # the colour beside the head; a flat ear leaves few pixels there: add the head's rim
        px = np.concatenate(beyond_px) if beyond_px else np.zeros((0, 3), np.uint8)
        if len(px) < 1.5 * good.sum():
            px = np.concatenate([px, *rim_px])
        skin = float(_is_skin(_lab(px), ref).mean())
        rec["skin_fraction"] = round(skin, 3)
        if skin <= config.skin_hidden:
            rec["status"], rec["reason"] = "hidden", "the pixels beside the head are not skin-coloured"
            continue
        if skin < config.skin_fitted:
            rec["reason"] = "the pixels beside the head are partly skin-coloured"
            continue
        # grid search: model extent per row = max(ear-less head, transformed ear region)
        ef = ear_faces_of[side]
        ids, inv = np.unique(ef, return_inverse=True)
        ear_bary, _ = _samples(ef, 3)
        pivot = _pivot(v, rest, region, sign)
        ww = w[ids][:, None]

        n_shift = int(config.max_shift_px // 2)  # shifts by whole 2-px row bins
        step = rows[1] - rows[0]
        rows_ext = rows[0] + step * np.arange(-n_shift, len(rows) + n_shift)

        def score(angles, scales):
            """[C] cost of each (protrusion, scale), the best vertical shift of the ear for each."""
            moved = _transform(v[ids], pivot, sign, angles - TEMPLATE_DEG, scales)  # [C, N, 3]
            moved = v[ids] + ww * (moved - v[ids])
            pts = _points(moved, inv.reshape(-1, 3), ear_bary)  # [C, P, 3]
            c = pts.shape[0]
            puv, _ = camera.project(pts.reshape(-1, 3))
            pu, pv = puv[:, 0].reshape(c, -1), puv[:, 1].reshape(c, -1)
            rms = np.full(c, np.inf)
            ext_all = _row_extent(pu, pv, rows_ext, outward)
            for j in range(2 * n_shift + 1):  # the ear's height is not fitted by the landmarks either
                ext = ext_all[:, j:j + len(rows) - 1]
                model = np.maximum(ext, base[None]) - base[None]  # px beyond the ear-less head
                err = (model[:, good] - meas[good][None]) * k
                rms = np.minimum(rms, np.sqrt(np.mean(err ** 2, axis=1)))
            return rms, rms + config.scale_cost * np.abs(np.log(scales)) / np.log(1.25)

        a, s = np.meshgrid(np.arange(ANGLE_RANGE[0], ANGLE_RANGE[1] + 0.1, 2.5),
                           np.array([0.8, 0.9, 1.0, 1.1, 1.25]), indexing="ij")
        _, cost = score(a.ravel(), s.ravel())
        best = int(np.argmin(cost))
        a0, s0 = float(a.ravel()[best]), float(s.ravel()[best])
        fine = np.clip(np.arange(a0 - 2.5, a0 + 2.51, 0.5), *ANGLE_RANGE)
        rms_f, cost_f = score(fine, np.full(len(fine), s0))
        a1 = float(fine[int(np.argmin(cost_f))])
        rms = float(rms_f[int(np.argmin(cost_f))])
        rec["rms_px"] = round(rms, 2)
        if rms > config.max_rms_px:
            rec["reason"] = f"no ear shape matches the silhouette (RMS {rms:.1f} px)"
            continue
        rec.update(status="fitted", protrusion_deg=round(a1, 2), scale=round(s0, 3))
        rec.pop("reason", None)
    fitted = {s: (record[s]["protrusion_deg"], record[s]["scale"]) for s in ("left", "right")
              if record[s]["status"] == "fitted"}
    if fitted:
        vertices = deform(v, rest, fitted, w).astype(np.asarray(vertices).dtype)
    log.info("ears: left %s, right %s (%.2f s)", record["left"]["status"], record["right"]["status"],
             time.perf_counter() - t0)
    return done()
