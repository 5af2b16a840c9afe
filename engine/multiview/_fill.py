"""Colours for the parts of the head the photo does not show (projection backend).

The projection backend (docs/architecture.md, "Data flow") stands in for the diffusion model's
hallucinated back of the head (Gen3D-Face §3.2 generates 360° views): what the photo does
not see is filled with hair and skin colours estimated from the photo, diffused over the
mesh so the fill meets the projected texture without seams.

- ``estimate_colours``: skin = robust median of forehead/cheek patches (mediapipe
  landmarks) or of the frontal, squarely seen mesh points; hair = median of the matte's
  foreground above the hairline and beside the face whose colour is far from the skin
  (CIE ΔE); a scalp of skin colour is a bald head (no hair is painted).
- ``HeadFrame`` / ``hair_prior``: where the scalp, the hairline and the ears are, from the
  mesh geometry alone (FLAME or template).
- ``hair_variation`` / ``scalp_colours``: the unseen head's colours per texel: hair with
  low-frequency blotches and fine combed streaks on the scalp, skin elsewhere.
- ``ear_gate``: ears hidden behind hair in the photo are not painted with that hair.
- ``hair_from_texels``: the hair colour re-estimated from the projected scalp texels (Lab median).
- ``clothing_mask`` / ``chin_gate``: collars below the jaw and the grazing underside of the
  chin are not projected; the skin fill continues there.
- ``fill_correction`` / ``diffuse_fill``: a smooth correction that takes the fill to the
  photo's colours where they were seen (data + decay + graph-Laplacian terms, one sparse
  solve on the mesh, so UV seams do not exist for it); the fill keeps its own detail.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

log = logging.getLogger(__name__)

#: mediapipe face-mesh points on the forehead and cheeks (skin without brows, eyes, lips).
FOREHEAD_IDS = (151, 108, 337, 9)
CHEEK_IDS = (50, 280, 205, 425, 117, 346)
#: Top of the forehead (the hairline's lowest point in the middle).
FOREHEAD_TOP_ID = 10
#: Eyebrow points (both sides): hair beside the face is looked for above them.
BROW_IDS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
#: mediapipe FACEMESH_FACE_OVAL, in order around the face.
FACE_OVAL_IDS = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: Used when the photo shows nothing above the forehead (cropped): a neutral dark brown.
DEFAULT_HAIR = np.array([0.22, 0.16, 0.12], np.float32)
#: CIE ΔE (Lab) from the skin colour beyond which a pixel counts as hair, not (bald) skin.
HAIR_DELTA_E = 14.0
#: With nothing above the forehead, at least 8 × this many pixels beside the face decide the hair.
MIN_BESIDE = 4
#: Share of the candidate pixels that must be hair-coloured for the person to count as having hair.
MIN_HAIR_SHARE = 0.15


@dataclass(frozen=True)
class Colours:
    """Skin and hair as seen in the photo.

    skin, hair: float32 [3] in [0, 1]; hair_state: "seen" (hair pixels found), "bald"
    (the scalp is skin-coloured: hair = skin) or "unknown" (nothing above the forehead:
    the default hair colour); hair_spread: robust std of the hair's lightness (0..1 scale),
    the amplitude of the fill's low-frequency variation; side_hair: share of hair-coloured
    pixels beside the face above the brows (hair over the temples lowers the hairline there).
    """

    skin: np.ndarray
    hair: np.ndarray
    hair_state: str
    hair_spread: float
    side_hair: float = 0.0


def _median(colours: np.ndarray) -> np.ndarray | None:
    return None if len(colours) < 8 else np.median(colours, axis=0).astype(np.float32)


def _skin(crop, landmarks, frontal_colours) -> np.ndarray:
    """Median of forehead and cheek patches (landmarks), else of the frontal mesh colours."""
    s = crop.shape[0]
    skin = None
    if landmarks is not None and len(landmarks) > max(FOREHEAD_IDS + CHEEK_IDS):
        r = max(2, int(0.015 * s))
        patches = []
        for i in FOREHEAD_IDS + CHEEK_IDS:
            x, y = int(landmarks[i, 0]), int(landmarks[i, 1])
            patches.append(crop[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].reshape(-1, 3))
        skin = _median(np.concatenate(patches))
    if skin is None:
        skin = _median(frontal_colours)
    return skin if skin is not None else np.array([0.75, 0.58, 0.48], np.float32)


def _hair_candidates(alpha: np.ndarray, landmarks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(above, beside) bool [S, S]: foreground above the hairline; beside the face above the brows.

    Without landmarks: the top 15 % of the foreground (hair or hat, seen from the front).
    The matte is eroded so its soft edge (background mixed in) does not count.
    """
    from scipy.ndimage import binary_erosion

    s = alpha.shape[0]
    fg = binary_erosion(alpha, iterations=max(1, s // 170))
    rows = np.arange(s)[:, None] + 0.5
    if landmarks is None or len(landmarks) <= max(BROW_IDS + FACE_OVAL_IDS):
        ys = np.nonzero(alpha.any(axis=1))[0]
        if not len(ys):
            return np.zeros_like(alpha), np.zeros_like(alpha)
        return fg & (rows < ys[0] + 0.15 * (ys[-1] - ys[0])), np.zeros_like(alpha)
    from skimage.draw import polygon2mask

    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    above_face = rows < lm[FOREHEAD_TOP_ID, 1] - 0.02 * s
    # beside the face: above the brows and outside the (slightly grown) face oval
    oval = lm[list(FACE_OVAL_IDS)]
    centre = oval.mean(axis=0)
    grown = centre + (oval - centre) * 1.06
    inside = polygon2mask((s, s), grown[:, ::-1] - 0.5)  # (row, col) of pixel centres
    beside = (rows < lm[list(BROW_IDS), 1].mean()) & ~inside
    return fg & above_face, fg & beside & ~above_face


def estimate_colours(
    crop: np.ndarray,
    alpha: np.ndarray,
    landmarks: np.ndarray | None,
    frontal_colours: np.ndarray,
    skin: np.ndarray | None = None,
) -> Colours:
    """Skin and hair colours from the photo (see ``Colours``).

    Hair = median of the candidate pixels (``_hair_candidates``) whose colour is at least
    ``HAIR_DELTA_E`` from the skin in CIE Lab; if too few are (a bald or shaved head, or
    a skin-coloured hat), the scalp stays skin. With nothing above the forehead (cropped, or a
    hat out of the matte) only hair beside the face decides; else the default hair ("unknown").
    crop: float32 [S, S, 3] in [0, 1]; alpha: bool [S, S] foreground;
    landmarks: [478, 2|3] crop pixels (mediapipe) or None;
    frontal_colours: [N, 3] colours of squarely seen face points (fallback for skin).
    skin: [3] the skin colour when already known (``_skin.estimate``), else estimated here.
    """
    from skimage.color import rgb2lab

    skin = _skin(crop, landmarks, frontal_colours) if skin is None else np.asarray(skin, np.float32)
    above, beside = _hair_candidates(alpha, landmarks)
    # Nothing above the forehead (the crop cuts the head there, or a hat was taken out of the
    # matte): hair beside the face above the brows is the evidence, if there is enough of it.
    if above.sum() < 8 and beside.sum() < 8 * MIN_BESIDE:
        return Colours(skin, DEFAULT_HAIR.copy(), "unknown", 0.05)
    sel = above | beside
    cand = crop[sel]  # [N, 3]
    lab = rgb2lab(cand[None].astype(np.float64))[0]
    skin_lab = rgb2lab(skin[None, None].astype(np.float64))[0, 0]
    hairy = np.linalg.norm(lab - skin_lab, axis=1) > HAIR_DELTA_E
    from_beside = beside[sel]
    side_hair = float(hairy[from_beside].mean()) if from_beside.sum() >= 8 else 0.0
    if hairy.mean() < MIN_HAIR_SHARE or hairy.sum() < 8:
        if above.sum() < 8:  # skin beside the face (ears, temples) says nothing of the scalp
            return Colours(skin, DEFAULT_HAIR.copy(), "unknown", 0.05)
        log.info("scalp colour is skin (%.0f %% of %d pixels differ): no hair", 100 * hairy.mean(), len(cand))
        return Colours(skin, skin.copy(), "bald", 0.0)
    hair = np.median(cand[hairy], axis=0).astype(np.float32)
    lightness = lab[hairy, 0] / 100.0
    q25, q75 = np.percentile(lightness, [25, 75])
    return Colours(skin, hair, "seen", float((q75 - q25) / 1.35), side_hair)


def skin_and_hair(
    crop: np.ndarray,
    alpha: np.ndarray,
    landmarks: np.ndarray | None,
    frontal_colours: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(skin [3], hair [3], hair_found): ``estimate_colours`` as a tuple (hair = skin when bald)."""
    c = estimate_colours(crop, alpha, landmarks, frontal_colours)
    return c.skin, c.hair, c.hair_state != "unknown"


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


#: The typical hairline: depth below the crown (in cranium half widths r) at azimuths from
#: the face (degrees): forehead top, temples, over the ear, behind the ear, nape.
HAIRLINE_DEG = (0.0, 55.0, 90.0, 115.0, 145.0, 180.0)
HAIRLINE_DEPTH = (0.7, 0.95, 1.45, 2.3, 2.85, 3.0)
#: The same where the photo shows hair over the temples (side_hair = 1): down to the ear tops.
HAIRLINE_DEPTH_COVERED = (0.7, 1.3, 1.55, 2.3, 2.85, 3.0)


@dataclass(frozen=True)
class HeadFrame:
    """Where the scalp and ears are, from the mesh alone (Blender world, face toward −Y).

    z_top: crown height; r: the cranium's half width 3 cm below the crown (above the ears);
    centre: [2] (x, y) of the cranium at that height; ears: [K, 3] ear centres (0–2).
    Geometry only, so it serves FLAME and the template alike.
    """

    z_top: float
    r: float
    centre: np.ndarray
    ears: np.ndarray

    @classmethod
    def from_vertices(cls, vertices: np.ndarray) -> "HeadFrame":
        v = np.asarray(vertices, dtype=np.float64)
        z_top = float(v[:, 2].max())
        band = v[np.abs(v[:, 2] - (z_top - 0.03)) < 0.01]
        band = band if len(band) >= 3 else v
        r = 0.5 * max(float(np.ptp(band[:, 0])), 1e-6)
        centre = np.array([0.5 * (band[:, 0].min() + band[:, 0].max()), float(np.median(band[:, 1]))])
        # An ear is the outermost point on each side between 1.2 r and 2.2 r below the crown
        # (ears stand off the skull); a side where nothing stands out has none to protect.
        ears = []
        mid = (v[:, 2] < z_top - 1.2 * r) & (v[:, 2] > z_top - 2.2 * r)
        for side in (-1.0, 1.0):
            out = side * (v[:, 0] - centre[0])
            cand = np.nonzero(mid & (out > 0))[0]
            if len(cand) and out[cand].max() >= 0.9 * r:
                tip = v[cand[np.argmax(out[cand])]]
                ears.append(tip - np.array([side * 0.12 * r, 0.0, 0.0]))
        return cls(z_top, r, centre, np.array(ears).reshape(-1, 3))

    def azimuth(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cos θ, θ) [N] of points [N, 3] around the vertical axis; θ = 0 toward the face (−Y)."""
        dx, dy = p[:, 0] - self.centre[0], p[:, 1] - self.centre[1]
        theta = np.arctan2(dx, -dy)
        return np.cos(theta), theta

    def ear_weight(self, p: np.ndarray) -> np.ndarray:
        """[N] in [0, 1]: on or right around an ear (an ellipsoid ~0.6 r tall around its centre)."""
        out = np.zeros(len(p))
        for c in self.ears:
            d = np.linalg.norm((p - c) / np.array([0.6, 0.45, 0.6]), axis=1) / self.r
            out = np.maximum(out, 1 - _smoothstep(d, 0.7, 1.0))
        return out


def hair_prior(vertices: np.ndarray, points: np.ndarray | None = None, frame: HeadFrame | None = None,
               side_hair: float = 0.0) -> np.ndarray:
    """A smooth hairness in [0, 1]: the scalp behind a typical hairline.

    The hairline runs ``HAIRLINE_DEPTH`` · r below the crown at the azimuths
    ``HAIRLINE_DEG`` from the face (``HeadFrame``), wobbling by ±0.08 r: at the forehead's
    top at the front, over the temples, just over the ears at the sides, dropping behind
    them to the nape (about mouth level) at the back; ~1.5 cm wide. ``side_hair`` in [0, 1]
    (``Colours.side_hair``) moves it toward ``HAIRLINE_DEPTH_COVERED`` at the temples.
    The ears stay skin.
    vertices: [V, 3] the head; points: [N, 3] where to evaluate (None: the vertices).
    Returns [N] float32.
    """
    frame = frame or HeadFrame.from_vertices(vertices)
    p = np.asarray(vertices if points is None else points, dtype=np.float64)
    _, theta = frame.azimuth(p)
    t = float(np.clip(side_hair, 0, 1))
    depth = (1 - t) * np.asarray(HAIRLINE_DEPTH) + t * np.asarray(HAIRLINE_DEPTH_COVERED)
    line = frame.z_top - frame.r * np.interp(np.degrees(np.abs(theta)), HAIRLINE_DEG, depth)
    line = line + 0.08 * frame.r * _blobs(p, seed=7)  # a natural hairline is not a ruled line
    hair = _smoothstep(p[:, 2] - line, -0.12 * frame.r, 0.12 * frame.r)
    return (hair * (1 - frame.ear_weight(p))).astype(np.float32)


def _blobs(p: np.ndarray, seed: int) -> np.ndarray:
    """[N] smooth noise in about [−1, 1]: random 3D cosines with wavelengths 3–8 cm."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(p))
    for wavelength in (0.08, 0.05, 0.03):
        for _ in range(3):
            k = rng.normal(size=3)
            k *= 2 * np.pi / wavelength / np.linalg.norm(k)
            out += np.cos(p @ k + rng.uniform(0, 2 * np.pi)) * wavelength / 0.08
    return np.clip(out / 4.0, -1, 1)


def hair_variation(points: np.ndarray, hair: np.ndarray, spread: float, frame: HeadFrame,
                   seed: int = 0) -> np.ndarray:
    """[N, 3] hair colour with soft variation, so the fill reads as hair, not a flat helmet.

    Two deterministic (``seed``) lightness fields multiply the colour: low-frequency blobs
    (``_blobs``) and faint fine streaks along the combing direction: random, bent waves in
    the azimuth around the crown (clumps of 1–6 mm), each fading in and out along the
    meridians and modulated by slow noise, so streaks run from the crown down and break off
    like strands instead of forming a regular rib. Their amplitude follows the
    photo's own lightness spread of the hair (``spread``), within ±6 … ±15 %.
    """
    p = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng(seed)
    _, theta = frame.azimuth(p)
    polar = (frame.z_top - p[:, 2]) / frame.r  # 0 at the crown, ~2.6 at the nape
    streaks = np.zeros(len(p))
    n = 14
    for cycles in rng.uniform(60, 400, n).round():
        bend = rng.uniform(0.5, 2.0) * np.sin(rng.uniform(1.5, 3.5) * polar + rng.uniform(0, 2 * np.pi))
        envelope = 0.5 + 0.5 * np.sin(rng.uniform(2, 6) * polar + rng.uniform(0, 2 * np.pi))
        streaks += envelope * np.sin(cycles * theta + bend * cycles / 90 + rng.uniform(0, 2 * np.pi))
    streaks *= np.sqrt(2.0 / n) * _smoothstep(polar, 0.05, 0.4)  # no pattern singularity at the crown
    # A slow random gain on the streaks: regular stripes everywhere read as a knit cap.
    streaks *= 0.6 + 0.4 * _blobs(p, seed + 2)
    amp = float(np.clip(spread, 0.06, 0.15))
    light = 1 + amp * (0.8 * _blobs(p, seed + 1) + 0.15 * np.clip(streaks, -1.5, 1.5))
    return (np.asarray(hair, np.float32)[None] * light[:, None]).clip(0, 1).astype(np.float32)


def scalp_colours(points: np.ndarray, colours: Colours, frame: HeadFrame, skin: np.ndarray | None = None) -> np.ndarray:
    """[N, 3] what the unseen head looks like at ``points``: hair on the scalp, skin elsewhere
    (skin everywhere for a bald head). skin: [N, 3] the skin per point (``_skin.SkinTone.colour_at``;
    None: ``colours.skin`` everywhere)."""
    out = np.empty((len(points), 3), np.float32)
    out[:] = colours.skin if skin is None else skin
    if colours.hair_state == "bald":
        return out
    h = hair_prior(points, points, frame, colours.side_hair)
    on = np.nonzero(h > 0)[0]  # the hair pattern only where there is hair (it costs ~1 µs a point)
    hv = hair_variation(np.asarray(points)[on], colours.hair, colours.hair_spread, frame)
    out[on] = (1 - h[on, None]) * out[on] + h[on, None] * hv
    return out


def edge_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Graph Laplacian of the mesh edges with weights (h / |e|)², h = mean edge length.

    The weights make the smoothness term metric (a fine and a coarse mesh of the same head
    diffuse over the same distance in metres). Returns (L [V, V] sparse, h).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    length = np.maximum(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1), 1e-9)
    h = float(length.mean())
    n = len(v)
    a = sp.coo_matrix(((h / length) ** 2, (e[:, 0], e[:, 1])), shape=(n, n))
    a = (a + a.T).tocsr()
    return (sp.diags(np.asarray(a.sum(axis=1)).ravel()) - a).tocsr(), h


def ear_gate(points: np.ndarray, observed: np.ndarray, skin: np.ndarray, frame: HeadFrame) -> np.ndarray:
    """[N] factor on the photo's weight: 0 on an ear whose photo colour is not skin-like.

    In a frontal photo the ears are seen at grazing angles or hidden behind hair, and the
    projection paints them with whatever covers them; ears are skin (a colour ΔE > 20 from
    the skin is rejected, ΔE < 10 kept, smoothly between).
    """
    from skimage.color import rgb2lab

    gate = np.ones(len(points), np.float32)
    ear = frame.ear_weight(np.asarray(points, np.float64))
    on = np.nonzero(ear > 0)[0]
    if len(on):
        lab = rgb2lab(np.asarray(observed, np.float64)[on][None])[0]
        d = np.linalg.norm(lab - rgb2lab(np.asarray(skin, np.float64)[None, None])[0, 0], axis=1)
        gate[on] = 1 - ear[on] * _smoothstep(d, 10.0, 20.0)
    return gate


def diffuse_fill(
    vertices: np.ndarray,
    faces: np.ndarray,
    observed: np.ndarray,
    weight: np.ndarray,
    prior: np.ndarray,
    *,
    data_strength: float = 20.0,
    decay_length: float = 0.03,
) -> np.ndarray:
    """Per-vertex colours: observed where seen, the prior far away, smooth in between.

    ``prior + fill_correction(...)``, clipped to [0, 1]: the prior keeps its own detail
    (a hairline, hair streaks) and only the difference to the photo is smoothed.
    vertices: [V, 3]; faces: [F, 3]; observed, prior: [V, 3]; weight: [V] in [0, 1].
    Returns [V, 3] float32.
    """
    d = fill_correction(vertices, faces, observed, weight, prior, data_strength=data_strength,
                        decay_length=decay_length)
    return (np.asarray(prior, np.float32) + d).clip(0, 1)


def fill_correction(
    vertices: np.ndarray,
    faces: np.ndarray,
    observed: np.ndarray,
    weight: np.ndarray,
    prior: np.ndarray,
    *,
    data_strength: float = 20.0,
    decay_length: float = 0.03,
) -> np.ndarray:
    """The smooth correction d [V, 3] that takes the prior to the photo where it was seen.

    Minimises Σ_i k·w_i |d_i − (obs_i − prior_i)|² + μ Σ_i |d_i|² + Σ_edges (h/|e|)² |d_i − d_j|²
    (seamless cloning on the mesh: the Laplacian acts on the difference, not the colours),
    whose normal equations (k·W + μ·I + L) d = k·W·(obs − prior) are one sparse solve. With
    μ = (h / decay_length)² the correction fades about ``decay_length`` metres away from the
    last observation, whatever the mesh resolution. Works on the mesh, so UV seams do not exist for it.
    """
    n = len(observed)
    lap, h = edge_laplacian(vertices, faces)
    mu = (h / decay_length) ** 2
    dw = data_strength * np.clip(weight, 0, 1)
    a = (sp.diags(dw + mu) + lap).tocsc()
    rhs = dw[:, None] * (np.asarray(observed, np.float64) - np.asarray(prior, np.float64))
    return np.asarray(spsolve(a, rhs), dtype=np.float32).reshape(n, 3)


#: Lower lip and chin (mediapipe): the neck and the underside of the chin lie below them.
LOWER_LIP_ID, CHIN_ID = 17, 152
#: Jaw corners (mediapipe): clothing is looked for below the line through them.
JAW_IDS = (172, 397)
#: Projected hair texels needed to trust their colour over the crop's candidates.
MIN_HAIR_TEXELS = 200


def hair_from_texels(colours: Colours, tex_c: np.ndarray, tex_w: np.ndarray, hairness: np.ndarray,
                     full_weight: float) -> Colours:
    """The hair colour as the mesh shows it: the median (CIE Lab) of the projected texels on the
    scalp (``hairness`` > 0.7) that take the photo fully and are hair-coloured (ΔE > ``HAIR_DELTA_E``
    from the skin).

    The crop's candidates (``estimate_colours``) include the shadowed hair beside the face and the
    matte's dark edge; the texels are the hair the viewer sees next to the fill, so the fill meets
    it without a step in hue or lightness. tex_c: [N, 3]; tex_w, hairness: [N]. Keeps the crop's
    estimate when fewer than ``MIN_HAIR_TEXELS`` qualify or the head is bald/unknown.
    """
    from dataclasses import replace

    from skimage.color import lab2rgb, rgb2lab

    if colours.hair_state != "seen":
        return colours
    sel = np.nonzero((hairness > 0.7) & (tex_w >= full_weight))[0]
    if len(sel) < MIN_HAIR_TEXELS:
        return colours
    lab = rgb2lab(np.asarray(tex_c, np.float64)[sel][None])[0]
    skin_lab = rgb2lab(np.asarray(colours.skin, np.float64)[None, None])[0, 0]
    lab = lab[np.linalg.norm(lab - skin_lab, axis=1) > HAIR_DELTA_E]
    if len(lab) < MIN_HAIR_TEXELS:
        return colours
    med = np.median(lab, axis=0)
    hair = lab2rgb(med[None, None])[0, 0].clip(0, 1).astype(np.float32)
    q25, q75 = np.percentile(lab[:, 0] / 100.0, [25, 75])
    log.info("hair colour from %d projected texels: %s (crop: %s)", len(lab), np.round(hair, 3),
             np.round(colours.hair, 3))
    return replace(colours, hair=hair, hair_spread=float((q75 - q25) / 1.35))


def _below_line(landmarks: np.ndarray, ids: tuple[int, ...], s: int) -> np.ndarray:
    """bool [S, S]: pixels below the line through the landmarks ``ids`` (crop pixels)."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    (x0, y0), (x1, y1) = lm[ids[0]], lm[ids[-1]]
    cols = np.arange(s)[None, :] + 0.5
    line = y0 + (y1 - y0) * (cols - x0) / (x1 - x0 if abs(x1 - x0) > 1e-6 else 1e-6)
    return (np.arange(s)[:, None] + 0.5) > line


def clothing_mask(crop: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray | None,
                  skin: np.ndarray) -> np.ndarray:
    """bool [S, S]: foreground below the jaw that is not skin (collars, clothes, jewellery).

    The head model's neck runs down into the clothing; projected (and mirrored) onto the neck,
    a black collar becomes a dark band around the neck. Not skin = much darker than the skin
    (L < 45 % of the skin's: deeper than a shadow) or of another hue/chroma (ΔE in a, b > 22).
    Below the line through the jaw corners and outside the face oval, grown by 2 % of the crop
    so the mixed pixels on its edge go too. Empty without landmarks.
    """
    from scipy.ndimage import binary_dilation, binary_opening
    from skimage.color import rgb2lab
    from skimage.draw import polygon2mask

    s = alpha.shape[0]
    if landmarks is None or len(landmarks) <= max(FACE_OVAL_IDS + JAW_IDS):
        return np.zeros_like(alpha)
    lm = np.asarray(landmarks, np.float64)[:, :2]
    oval = polygon2mask((s, s), lm[list(FACE_OVAL_IDS)][:, ::-1] - 0.5)
    region = alpha & _below_line(lm, JAW_IDS, s) & ~oval
    out = np.zeros_like(alpha)
    if not region.any():
        return out
    lab = rgb2lab(np.asarray(crop, np.float64)[region][None])[0]
    skin_lab = rgb2lab(np.asarray(skin, np.float64)[None, None])[0, 0]
    cloth = (lab[:, 0] < 0.45 * skin_lab[0]) | (np.linalg.norm(lab[:, 1:] - skin_lab[1:], axis=1) > 22)
    out[region] = cloth
    out = binary_opening(out, iterations=max(1, s // 256))  # isolated pixels are noise, not clothes
    return binary_dilation(out, iterations=max(1, int(0.02 * s))) & alpha & ~oval


def chin_gate(points: np.ndarray, normals: np.ndarray, rows: np.ndarray, lip_row: float | None) -> np.ndarray:
    """[N] factor on the photo's weight: 0 on downward-facing surface below the lower lip.

    A frontal photo sees the underside of the chin at a grazing angle: projected, it stretches
    into streaks seen from below; the skin fill with the smooth correction is better there.
    points, normals: [N, 3]; rows: [N] crop rows the points project to; lip_row: the lower lip's row.
    """
    if lip_row is None:
        return np.ones(len(points), np.float32)
    down = _smoothstep(-np.asarray(normals, np.float64)[:, 2], 0.35, 0.7)
    return (1 - down * (np.asarray(rows) > lip_row)).astype(np.float32)
