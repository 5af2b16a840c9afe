"""``--align auto`` from face landmarks: the artist's mesh put on the run's head by matching
mediapipe landmarks found on both, refined by ICP (``recon.align``).

1. the run: FaceMesh (``engine.preprocess.detect``) on its most frontal views (cameras
   nearest the run's front, −Y; the rest if those find nothing), each landmark lifted to
   3D where its pixel's ray meets the run's head (rasterised from the view's camera);
2. the mesh, coarse: rendered with its own texture (or shaded in a skin tone without one)
   from the 6 axis directions × 4 up-rolls, conventional front (−Y, Z up) first, until a
   face is detected with confidence; landmarks lifted onto the mesh through the render;
   robust Umeyama on the landmarks both sides have → a first similarity;
3. the mesh, fine: rendered again from every run view that found the face, its camera
   carried into the mesh's frame by that similarity, so each landmark is seen from the same
   viewpoint on both sides (even the face-oval points, which slide with the view); per view
   the pairs are kept, median over views, robust Umeyama again;
4. trimmed similarity ICP (``recon.align.icp``) from there against the run's head, on the
   mesh's samples within a few cm of the head (extra geometry such as shoulders or a plinth
   takes no part); then the shape-only path (``recon.align.auto_align``) is run as well and
   the lower ICP residual wins among the candidates whose landmarks agree (RMS within
   ``LANDMARK_TOLERANCE`` of the landmark fit's own).

mediapipe is imported here, in the engine: ``recon`` stays free of it.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from recon.align import Similarity, auto_align, icp, sample_surface, umeyama
from recon.cameras import Camera, look_at
from recon.raster import interpolate, rasterize, vertex_normals
from recon.texture import render_textured

log = logging.getLogger(__name__)

#: Render side (pixels) of the mesh's candidate views; field of view (degrees).
RENDER_SIZE = 384
RENDER_FOV = 30.0
#: Render side of the coarse search's views; the fine passes render at the run's view size
#: clamped to [RENDER_SIZE, FINE_MAX].
COARSE_SIZE = 256
FINE_MAX = 512
#: Run views tried first: cameras within this angle (degrees) of the run's front (−Y).
FRONT_CONE = 50.0
#: Detection confidence a candidate view needs ("confident detection").
MIN_SCORE = 0.6
#: Fewest landmark pairs for a similarity.
MIN_PAIRS = 30
#: Mesh samples farther than this share of the head's RMS radius from the head after the
#: landmark fit take no part in ICP (extra geometry: shoulders, plinth, hair cards).
CROP = 0.25
#: A candidate is accepted when its landmark RMS ≤ max(3 × the landmark fit's, this, metres).
LANDMARK_TOLERANCE = 0.006
#: Landmark fits accepted: RMS of the inliers within this share of the landmarks' spread
#: (RMS distance from their centroid, ~5 cm on a face): coarse (candidate views: loose, a
#: face 40-55° off the view lifts its far-side landmarks wrongly, ~15-25 mm RMS; the fine
#: passes from there decide), fine (measured, bench/align.py: right fits 0.6-1.4 mm on the
#: run's own head, 2-5.7 mm on other identities; wrong ones 15-19 mm).
COARSE_RMS = 0.5
FINE_RMS = 0.12
#: Coarse fits refined at most (each costs two fine passes, ~1 s).
MAX_SEEDS = 8
#: Two run views agree when their 3D landmarks are within this share of the spread (median).
AGREE = 0.1
#: The landmark-seeded result wins unless the shape path's residual is lower by more than
#: TIE (relative) + TIE_ABS (metres).
TIE = 0.1
TIE_ABS = 1e-4
#: Skin-like albedo for meshes without a texture (sRGB 0..1).
SKIN = (0.80, 0.64, 0.53)
BACKGROUND = (0.55, 0.6, 0.65)


@dataclass
class Alignment:
    """The chosen similarity and what bake.json reports about it."""

    similarity: Similarity
    method: str  # "landmarks" | "shape"
    report: dict = field(default_factory=dict)


def _oval() -> np.ndarray:
    from engine.prior._template_shape import FACE_OVAL

    return FACE_OVAL


def _detect(rgb: np.ndarray) -> tuple[np.ndarray | None, float]:
    """([478, 2] pixel landmarks or None, detection score) of the largest face in rgb uint8.

    Landmarks that are not an upright face (subject's left eye right of the right one, mouth
    below the eyes, eye line within 35° of horizontal) are rejected: FaceMesh on a face rolled
    far from upright returns a collapsed or scrambled set rather than nothing."""
    from engine.preprocess import detect

    boxes = detect.detect_faces(rgb, confidence=0.5, max_side=max(rgb.shape[:2]))
    for box in boxes[:2]:
        points = detect.landmarks_in_box(rgb, box)
        if points is not None and _upright(points[:, :2]):
            return points[:, :2], box.score
    return None, 0.0


def _upright(lm: np.ndarray) -> bool:
    eyes = lm[263] - lm[33]
    down = lm[13] - (lm[263] + lm[33]) / 2
    span = float(np.linalg.norm(eyes))
    return bool(span > 4 and eyes[0] > span * math.cos(math.radians(35)) and 0.4 * span < down[1] < 2.5 * span)


def _lift(points_img: np.ndarray, covered: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """3D points [N, 3] under pixel positions xy [N, 2] (continuous coords) of a position image
    [h, w, 3]: bilinear where the 4 neighbours are covered, nearest covered pixel else, NaN off."""
    h, w = covered.shape
    out = np.full((len(xy), 3), np.nan)
    x, y = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    for i in np.nonzero(inside)[0]:
        c = covered[y0[i]:y0[i] + 2, x0[i]:x0[i] + 2]
        if c.all():
            fx, fy = x[i] - x0[i], y[i] - y0[i]
            p = points_img[y0[i]:y0[i] + 2, x0[i]:x0[i] + 2].astype(np.float64)
            out[i] = ((1 - fy) * ((1 - fx) * p[0, 0] + fx * p[0, 1]) + fy * ((1 - fx) * p[1, 0] + fx * p[1, 1]))
        else:
            ni, nj = int(round(y[i])), int(round(x[i]))
            if covered[ni, nj]:
                out[i] = points_img[ni, nj]
    return out


def _render(v, f, uvs, texture, normals, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8 [s, s, 3] shaded on a plain background, world points [s, s, 3], covered [s, s])."""
    frags = rasterize(v, f, cam)
    covered = frags.mask
    if texture is not None and uvs is not None:
        colour, _ = render_textured(v, f, uvs, f, texture, cam, frags)
    else:
        colour = np.broadcast_to(np.asarray(SKIN, np.float32), (*covered.shape, 3))
    n = interpolate(normals, frags)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    light = cam.c2w[:3, :3] @ np.array([0.0, 0.35, 1.0])
    light /= np.linalg.norm(light)
    shade = 0.45 + 0.55 * np.abs(n @ light)  # windings of artists' meshes are not trusted: two-sided
    rgb = np.where(covered[..., None], colour[..., :3] * shade[..., None], np.asarray(BACKGROUND, np.float32))
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), interpolate(v, frags), covered


def _camera(centre: np.ndarray, direction: np.ndarray, up: np.ndarray, distance: float, size: int = RENDER_SIZE,
            fov: float = RENDER_FOV) -> Camera:
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    return Camera(look_at(centre + distance * direction, centre, up), f, f, size / 2, size / 2, size, size)


def _candidates() -> list[tuple[np.ndarray, np.ndarray]]:
    """(camera direction from the mesh, up) for the 6 axis directions: the run's own convention
    (camera on −Y, Z up: the face toward −Y) first. A face is at most 55° from one of them,
    which FaceMesh still reads (measured up to 55° of yaw); the roll is searched in the image."""
    axes = [np.array(a, np.float64) for a in ((0, -1, 0), (0, 0, 1), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, 0, -1))]
    return [(d, np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.5 else np.array([0.0, -1.0, 0.0])) for d in axes]


#: In-image rolls tried per candidate direction (degrees): FaceMesh reads faces rolled up to
#: ~25° (measured: 22.5° found, 45° not), so 45° steps leave no gap.
ROLLS = (0, 45, -45, 90, -90, 135, -135, 180)


def _rolled(rgb: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """(rgb rotated by ``degrees`` about its centre (counter-clockwise on screen), the inverse
    affine [2, 3] mapping its pixel coordinates back)."""
    import cv2

    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = rgb if degrees == 0 else cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REPLICATE)
    return out, cv2.invertAffineTransform(m)


def run_landmarks(views, head_v: np.ndarray, head_f: np.ndarray, max_views: int = 5, max_tries: int = 8,
                  cancel=None) -> tuple[list[dict], str | None]:
    """Landmarks of the run's views lifted onto its head: (one dict per view that found the face,
    with ``view``, ``camera`` and ``points`` [478, 3] (NaN where the pixel misses the head);
    why there are none, or None).

    Views are tried from the most frontal (camera nearest the run's front, −Y) on, at most
    ``max_tries``. With two or more detections only the views that agree are kept (the
    median distance between their 3D landmarks under ``AGREE`` × the landmarks' spread; the
    largest such group, at least two views): a false face on a textured surface lands
    elsewhere on the head in every view."""
    centre = head_v.mean(0)
    front = np.array([0.0, -1.0, 0.0])

    def frontal(cam):
        d = cam.center - centre
        return float(d @ front / max(np.linalg.norm(d), 1e-12))

    order = sorted(range(len(views)), key=lambda i: -frontal(views[i][1]))
    found = []
    for i in order[:max_tries]:
        if len(found) >= max_views:
            break
        if cancel is not None:
            cancel()
        img, cam, mask = views[i]
        m = np.asarray(mask, np.float32)[..., None]
        rgb = np.asarray(img, np.float32)[..., :3] * m + np.asarray(BACKGROUND, np.float32) * (1 - m)
        lm, _ = _detect(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8))
        if lm is None:
            continue
        frags = rasterize(head_v, head_f, cam)
        found.append({"view": i, "camera": cam, "points": _lift(interpolate(head_v, frags), frags.mask, lm)})
    if not found:
        return [], f"no face found on the run's views ({min(max_tries, len(views))} most frontal tried)"
    if len(found) == 1:
        return found, None
    inner = ~np.isin(np.arange(len(found[0]["points"])), _oval())
    n = len(found)
    agree = np.eye(n, dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = found[i]["points"][inner], found[j]["points"][inner]
            ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
            scale = max(_spread(a[ok]), _spread(b[ok])) if ok.sum() >= MIN_PAIRS else 0.0
            d = float(np.median(np.linalg.norm(a[ok] - b[ok], axis=1))) if ok.sum() >= MIN_PAIRS else np.inf
            agree[i, j] = agree[j, i] = d <= AGREE * scale
    best = int(np.argmax(agree.sum(1)))
    group = [found[k] for k in np.nonzero(agree[best])[0]]
    if len(group) < 2:
        return [], f"the faces found on {n} of the run's views do not agree (not one face)"
    return group, None


def robust_umeyama(src: np.ndarray, dst: np.ndarray, rounds: int = 4) -> tuple[Similarity, np.ndarray]:
    """Umeyama on pairs [N, 3] with outliers dropped (residual > 2.5 × median, at least 3 mm):
    (similarity, bool [N] pairs kept)."""
    keep = np.ones(len(src), bool)
    for _ in range(rounds):
        sim = umeyama(src[keep], dst[keep])
        r = np.linalg.norm(sim.apply(src) - dst, axis=1)
        new = r <= max(2.5 * float(np.median(r[keep])), 0.003)
        if new.sum() < MIN_PAIRS or (new == keep).all():
            break
        keep = new
    return umeyama(src[keep], dst[keep]), keep


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, ids) of the landmarks finite on both sides."""
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    return a[ok], b[ok], np.nonzero(ok)[0]


def _median(stack: list[np.ndarray]) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a landmark NaN in every view stays NaN
        return np.nanmedian(np.stack(stack), axis=0)


@dataclass
class _Fit:
    """A landmark similarity with its pairs: src [N, 3] mesh, dst [N, 3] run, keep bool [N]."""

    sim: Similarity
    src: np.ndarray
    dst: np.ndarray
    keep: np.ndarray

    @property
    def rms(self) -> float:
        return _landmark_rms(self.sim, self.src, self.dst, self.keep)

    def good(self, spread: float, rms: float, kept: float) -> bool:
        """At least ``kept`` of the pairs inliers, their RMS within ``rms`` × the landmarks' spread."""
        return len(self.src) >= MIN_PAIRS and self.keep.mean() >= kept and self.rms <= rms * spread


def _fit(src: np.ndarray, dst: np.ndarray) -> _Fit | None:
    src, dst, _ = _pairs(src, dst)
    if len(src) < MIN_PAIRS:
        return None
    sim, keep = robust_umeyama(src, dst)
    return _Fit(sim, src, dst, keep)


def mesh_coarse(v, f, uvs, texture, normals, run_points: np.ndarray, cancel=None):
    """Candidate views of the mesh (``_candidates`` × ``ROLLS``) whose landmarks give a first
    similarity: yields (views tried, _Fit) for every view with an upright, confident face
    whose inner landmarks (the face oval left out: it slides with the view) fit loosely."""
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    distance = radius / math.sin(math.radians(RENDER_FOV) / 2)
    inner = ~np.isin(np.arange(len(run_points)), _oval())
    spread = _spread(run_points)
    tried = 0
    for d, up in _candidates():
        rgb, pts, covered = _render(v, f, uvs, texture, normals, _camera(centre, d, up, distance, COARSE_SIZE))
        for roll in ROLLS:
            if cancel is not None:
                cancel()
            tried += 1
            img, back = _rolled(rgb, roll)
            lm, score = _detect(img)
            if lm is None or score < MIN_SCORE:
                continue
            lm = lm @ back[:, :2].T + back[:, 2]
            fit = _fit(_lift(pts, covered, lm)[inner], run_points[inner])
            if fit is not None and fit.good(spread, COARSE_RMS, 0.5):
                log.info("landmarks: face on candidate view %d (score %.2f, RMS %.1f mm)", tried, score,
                         1000 * fit.rms)
                yield tried, fit


def mesh_fine(v, f, uvs, texture, normals, run_found: list[dict], seed: Similarity, cancel=None) -> _Fit | None:
    """Landmark pairs from renders of the mesh taken from the run's own landmark views, each
    camera carried into the mesh's frame by ``seed`` (so both sides see the face from the same
    viewpoint), median over views; robust Umeyama on them."""
    inv_r, inv_s = seed.rotation.T, 1.0 / seed.scale
    per_src, per_dst = [], []
    for found in run_found:
        if cancel is not None:
            cancel()
        cam = found["camera"]
        c2w = np.eye(4)
        c2w[:3, :3] = inv_r @ cam.c2w[:3, :3]
        c2w[:3, 3] = inv_s * inv_r @ (cam.center - seed.translation)
        mcam = Camera(c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.w, cam.h)
        side = max(cam.w, cam.h)
        target = min(max(side, RENDER_SIZE), FINE_MAX)  # small views bigger for the detector, big ones cheaper
        if target != side:
            mcam = mcam.resized(max(1, target * cam.w // side), max(1, target * cam.h // side))
        rgb, pts, covered = _render(v, f, uvs, texture, normals, mcam)
        lm, _ = _detect(rgb)
        if lm is None:
            continue
        per_src.append(_lift(pts, covered, lm))
        per_dst.append(found["points"])
    if not per_src:
        return None
    return _fit(_median(per_src), _median(per_dst))


def _spread(points: np.ndarray) -> float:
    """RMS distance of the finite landmarks [N, 3] from their centroid (metres)."""
    p = points[np.isfinite(points).all(1)]
    return float(np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean())) if len(p) else 0.0


def _landmark_rms(sim: Similarity, src: np.ndarray, dst: np.ndarray, keep: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((sim.apply(src[keep]) - dst[keep]) ** 2, 1))))


def landmark_fit(v, f, uvs, texture, normals, run_found, shape: Similarity, cancel=None):
    """(_Fit, seed name, mesh views tried) of the first seed whose fine fit is good, or
    (None, reason, views tried). Seeds: the shape path's result, then the candidate views."""
    run_points = _median([d["points"] for d in run_found])
    spread = _spread(run_points)

    def refine(seed):
        fit = None
        for _ in range(2):  # the second pass sees the face from almost exactly the run's viewpoints
            new = mesh_fine(v, f, uvs, texture, normals, run_found, seed if fit is None else fit.sim, cancel)
            if new is None:
                break
            fit = new
        if fit is not None:
            log.debug("landmarks: fine fit RMS %.1f mm, %.0f %% of %d pairs kept", 1000 * fit.rms,
                      100 * fit.keep.mean(), len(fit.src))
        return fit if fit is not None and fit.good(spread, FINE_RMS, 0.7) else None

    fit = refine(shape)
    if fit is not None:
        return fit, "shape", 0
    tried = 0
    for k, (tried, coarse) in enumerate(mesh_coarse(v, f, uvs, texture, normals, run_points, cancel)):
        fit = refine(coarse.sim)
        if fit is not None:
            return fit, f"view {tried}", tried
        if k + 1 >= MAX_SEEDS:
            return None, f"no face found on the mesh that matches the run's ({MAX_SEEDS} candidate faces refined, " \
                         f"none fits)", tried
    n_views = len(_candidates()) * len(ROLLS)
    return None, f"no face found on the mesh that matches the run's (shape seed and {n_views} views)", n_views


def align(v, f, uvs, texture, views, head_v, head_f, warn=None, cancel=None, n: int = 2000, seed: int = 0) -> Alignment:
    """The similarity putting the mesh (v [V, 3], f [F, 3], uvs [V, 2] or None, texture float
    [H, W, 3] or None) on the run's head (head_v, head_f), landmark-seeded when both sides
    show a face; views: [(rgb float [h, w, 3], Camera, mask bool [h, w])].

    warn(code, message): told ``align_no_landmarks`` when it falls back to the shape path."""
    from scipy.spatial import cKDTree

    t0 = time.perf_counter()
    v = np.asarray(v, np.float64)
    f = np.asarray(f, np.int64)
    tv, tf = np.asarray(head_v, np.float64), np.asarray(head_f, np.int64)
    shape = auto_align(v, f, tv, tf, n=n, seed=seed)
    t_shape = time.perf_counter()
    candidates = {"shape": shape}
    report: dict = {}
    run_found, reason = run_landmarks(views, tv, tf, cancel=cancel)
    report["run_views_with_face"] = [d["view"] for d in run_found]
    fit = None
    if run_found:
        fit, reason, tried = landmark_fit(v, f, uvs, texture, vertex_normals(v, f), run_found, shape, cancel)
        report["mesh_views_tried"] = tried
    t_lm = time.perf_counter()
    if fit is not None:
        report["landmark_seed"] = reason
        src = sample_surface(v, f, n, seed)
        dense = sample_surface(tv, tf, 20 * n, seed + 1)
        tree = cKDTree(dense)
        rms_radius = float(np.sqrt(((dense - dense.mean(0)) ** 2).sum(1).mean()))
        cur, near = fit.sim, np.ones(len(src), bool)
        for crop, iterations in ((CROP, 15), (0.5 * CROP, 15)):
            near = tree.query(cur.apply(src))[0] <= crop * rms_radius
            if near.sum() < 100:
                break
            cur = icp(src[near], tv, tf, cur, iterations=iterations, tree_points=dense)
        candidates["landmarks"] = cur
        report.update(landmarks_found=int(len(fit.src)), landmarks_used=int(fit.keep.sum()),
                      landmark_fit_rms_mm=1000 * fit.rms, icp_samples_used=int(near.sum()), icp_samples=n)
    t_icp = time.perf_counter()
    method = "shape"
    if fit is not None:
        lm_rms = {k: _landmark_rms(c, fit.src, fit.dst, fit.keep) for k, c in candidates.items()}
        tolerance = max(3 * fit.rms, LANDMARK_TOLERANCE)
        agree = [k for k in candidates if lm_rms[k] <= tolerance]
        # a tie (within TIE of the residual) goes to the landmarks: they know which point is which
        best = min(c.residual for k, c in candidates.items() if k in agree) if agree else None
        method = "landmarks" if not agree or "landmarks" in agree and \
            candidates["landmarks"].residual <= best * (1 + TIE) + TIE_ABS else "shape"
        report["candidate_landmark_rms_mm"] = {k: 1000 * r for k, r in lm_rms.items()}
        report["landmark_rms_mm"] = 1000 * lm_rms[method]
    else:
        message = f"--align auto: {reason}; the mesh was aligned by its shape only"
        log.warning(message)
        if warn is not None:
            warn("align_no_landmarks", message)
        report["fallback_reason"] = reason
    sim = candidates[method]
    report.update(method=method, residual_mm=1000 * sim.residual,
                  candidate_residual_mm={k: 1000 * c.residual for k, c in candidates.items()},
                  candidate_scale={k: c.scale for k, c in candidates.items()},
                  scale=sim.scale, matrix=sim.matrix.tolist(),
                  seconds={"shape": t_shape - t0, "landmarks": t_lm - t_shape, "icp_landmarks": t_icp - t_lm,
                           "total": time.perf_counter() - t0})
    log.info("auto alignment: %s, residual %.2f mm, scale %.4f", method, 1000 * sim.residual, sim.scale)
    return Alignment(sim, method, report)
