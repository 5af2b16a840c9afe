"""Fit a head model to the crop's 478 mediapipe landmarks (paper §3.1: the FLAME estimate).

The paper estimates FLAME with DECA; we fit the model to mediapipe's landmarks instead
(no network, CPU, well under a second). The head stays in model space = the Blender
world, and the fitted pose becomes the *input camera*: camera-from-model rotation R and
translation T, so c2w = [Rᵀ | −RᵀT].

1. Rigid init: similarity Procrustes (Umeyama) between the model's mean landmarks and the
   observations lifted to 3D as (u − cx, −(v − cy), −z) pixels (mediapipe's z is a
   relative depth in pixel units, smaller = closer); the scale gives the distance f / s.
2. Rigid refinement, then joint refinement of rotation, translation, focal (optional),
   shape, expression and jaw: Levenberg–Marquardt (~30 parameters; Jacobian by batched
   float64 central differences for the template, forward-mode AD otherwise) on a Huber loss (IRLS) of the 2D reprojection (+ a small
   weight on the relative depth), face-contour points down-weighted (their image position
   slides along the silhouette), Gaussian priors on every coefficient and on log-focal,
   and a soft limit at ``coeff_limit`` standard deviations.
3. Noise-adaptive prior (empirical Bayes): the RMS residual σ̂ of that fit measures how well
   the model *can* explain these landmarks (mediapipe noise + what the model lacks, e.g. a
   broad smile's raised cheeks). The MAP weight of a unit-variance prior against a mean
   squared residual is σ²/N; landmark errors are strongly correlated, so N is an effective
   count (``prior_landmarks``), not 468. When σ̂²/N exceeds the configured weights the joint
   stage is refined with it: clean landmarks keep fine detail, noisy ones stop feeding
   unexplained error into depth-like coefficients (the nose length trades against yaw in
   2D, and a long, pointed nose was the visible result).
4. Divergence (non-finite values, a large residual, an absurd distance or focal) → the
   mean head seen by a frontal camera, and a ``fit_diverged`` warning.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.cameras import Camera, look_at

from ._template_shape import FACE_OVAL

log = logging.getLogger(__name__)

#: Residuals are measured as if the crop were this many pixels wide (config is size-free).
REF_SIZE = 512.0


@dataclass(frozen=True)
class FitConfig:
    """How the head model is fitted to the landmarks."""

    rigid_iterations: int = 10
    """Levenberg–Marquardt iterations of the rigid stage (rotation, translation)."""
    iterations: int = 30
    """Levenberg–Marquardt iterations of the joint stage (pose, focal, shape, expression, jaw)."""
    refine_focal: bool = True
    """Refine the focal length from the landmarks (held near the given one by ``focal_prior``)."""
    huber_px: float = 2.0
    """Huber threshold of the reprojection loss, pixels at a 512-px crop."""
    depth_weight: float = 0.1
    """Weight of mediapipe's relative depth against the 2D reprojection (it is noisy)."""
    contour_weight: float = 0.3
    """Weight of the face-oval landmarks (they slide along the silhouette with the pose)."""
    shape_prior: float = 0.002
    """Minimum weight of ‖shape‖² (coefficients are in standard deviations)."""
    expr_prior: float = 0.002
    """Minimum weight of ‖expression‖²."""
    prior_landmarks: float = 30.0
    """Effective number of independent landmarks N: the shape/expression weights become at
    least σ̂²/N, σ̂ = RMS residual (px at 512) of the first joint fit. 0 disables the refit."""
    adaptive_iterations: int = 15
    """Levenberg–Marquardt iterations of the refit with the noise-adaptive weights."""
    coeff_limit: float = 2.5
    """Soft limit on |shape|, |expression| (standard deviations): beyond it a steep quadratic
    wall (``limit_weight``) keeps the head within plausible human variation."""
    limit_weight: float = 50.0
    """Weight of (|c| − coeff_limit)² beyond the limit."""
    jaw_prior: float = 20.0
    """Weight of ‖jaw‖² (radians); sideways jaw components cost 10× more, a closed-past-rest jaw 100×."""
    focal_prior: float = 10.0
    """Weight of log(f / f_given)²."""
    max_residual_px: float = 20.0
    """RMS reprojection error (pixels at 512) above which the fit counts as diverged."""


@dataclass(frozen=True)
class FitResult:
    """A fitted head and the input camera that sees it.

    vertices: [V, 3] float32 model space = Blender world; camera: the input camera (crop).
    shape [n_shape], expr [n_expr], jaw [3]: coefficients; rotation [3, 3], translation [3]:
    camera-from-model (OpenGL camera axes); focal: pixels; residual_px: RMS reprojection of
    the used landmarks in crop pixels; diverged: the fallback was used.
    """

    vertices: np.ndarray
    camera: Camera
    shape: np.ndarray
    expr: np.ndarray
    jaw: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    residual_px: float
    diverged: bool
    seconds: float


@dataclass(frozen=True)
class Intrinsics:
    """The crop's pinhole intrinsics (pixels, continuous coordinates) and its size."""

    fx: float
    fy: float
    cx: float
    cy: float
    size: int


def umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted similarity dst ≈ s·R·src + t. src, dst: [N, 3], w: [N] → (s, R [3, 3], t [3])."""
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])  # no reflections
    r = u @ d @ vt
    s = float((sig * np.diag(d)).sum() / (w @ (a * a).sum(1)))
    return s, r, mu_d - s * r @ mu_s


def so3_exp(w: Tensor) -> Tensor:
    """Axis-angle [..., 3] → rotation [..., 3, 3] (Rodrigues; smooth at 0)."""
    theta2 = (w * w).sum(-1)[..., None, None]
    theta = torch.sqrt(theta2 + 1e-16)
    zero = torch.zeros_like(w[..., 0])
    k = torch.stack([torch.stack([zero, -w[..., 2], w[..., 1]], -1), torch.stack([w[..., 2], zero, -w[..., 0]], -1),
                     torch.stack([-w[..., 1], w[..., 0], zero], -1)], -2)
    a = torch.where(theta2 > 1e-12, torch.sin(theta) / theta, 1 - theta2 / 6)
    b = torch.where(theta2 > 1e-12, (1 - torch.cos(theta)) / (theta2 + 1e-16), 0.5 - theta2 / 24)
    return torch.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def landmark_weights(ids: np.ndarray, contour_weight: float) -> np.ndarray:
    """[L] per-landmark weight: face-oval points get ``contour_weight``, the rest 1."""
    return np.where(np.isin(ids, FACE_OVAL), contour_weight, 1.0)


class _Problem:
    """One fit as a least-squares problem over a flat parameter vector (float64).

    Layout of ``x``: rotation delta (3, axis-angle applied before ``r0``), translation (3,
    metres, camera axes), log focal ratio (1), shape, expression, jaw (3). Residuals are
    scaled so that ½‖r‖² is the loss: 2D reprojection and relative depth in pixels at a
    512-px crop (landmark- and Huber-weighted), then the priors.
    """

    def __init__(self, model, obs: np.ndarray, intr: Intrinsics, cfg: FitConfig):
        self.model, self.intr, self.cfg = model, intr, cfg
        ids = np.asarray(model.landmark_ids)
        self.obs = torch.as_tensor(obs[ids], dtype=torch.float64)  # [L, 3]
        self.w = torch.as_tensor(landmark_weights(ids, cfg.contour_weight), dtype=torch.float64)  # [L]
        self.k = REF_SIZE / intr.size
        self.sizes = {"rot": 3, "trans": 3, "log_f": 1, "shape": model.n_shape, "expr": model.n_expr, "jaw": 3}
        offsets = np.cumsum([0] + list(self.sizes.values()))
        self.slices = {n: slice(int(a), int(b)) for n, a, b in zip(self.sizes, offsets[:-1], offsets[1:])}
        self.x = torch.zeros(int(offsets[-1]), dtype=torch.float64)
        self.r0 = torch.eye(3, dtype=torch.float64)
        self.robust = torch.ones(len(ids), dtype=torch.float64)  # IRLS weights (Huber)
        self.set_priors(cfg.shape_prior, cfg.expr_prior)
        limited = torch.zeros(len(self.x), dtype=torch.bool)
        limited[self.slices["shape"]] = True
        limited[self.slices["expr"]] = True
        self.limited = limited

    def set_priors(self, shape_weight: float, expr_weight: float) -> None:
        """Gaussian prior weights (loss w·c²) on the coefficient blocks."""
        cfg, model = self.cfg, self.model
        jaw_w = torch.tensor([1.0, 10.0, 10.0], dtype=torch.float64) * cfg.jaw_prior
        self.prior_sqrt = torch.sqrt(2 * torch.cat([
            torch.zeros(6, dtype=torch.float64), torch.full((1,), cfg.focal_prior, dtype=torch.float64),
            torch.full((model.n_shape,), shape_weight, dtype=torch.float64),
            torch.full((model.n_expr,), expr_weight, dtype=torch.float64), jaw_w]))

    def part(self, x: Tensor, name: str) -> Tensor:
        """The ``name`` block of ``x`` [..., P] → [..., n]."""
        return x[..., self.slices[name]]

    def landmarks(self, x: Tensor) -> Tensor:
        """[..., L, 3] model-space landmarks for the coefficients in ``x`` [..., P]."""
        shape, expr, jaw = self.part(x, "shape"), self.part(x, "expr"), self.part(x, "jaw")
        batched = getattr(self.model, "landmark_points_batch", None)  # float64, any batch shape
        if batched is not None:
            return batched(shape, expr, jaw)
        if x.ndim > 1:
            return torch.stack([self.landmarks(xi) for xi in x])
        args = (shape.float(), expr.float(), jaw.float())
        fast = getattr(self.model, "landmark_points", None)  # optional: skips unused vertices
        lm = fast(*args) if fast is not None else self.model.landmarks(self.model.vertices(*args))
        return lm.to(torch.float64)

    def rotation(self, x: Tensor) -> Tensor:
        """[..., 3, 3] camera-from-model rotation."""
        return so3_exp(self.part(x, "rot")) @ self.r0

    def focal(self, x: Tensor) -> Tensor:
        """[...] focal length in pixels."""
        return self.intr.fx * torch.exp(self.part(x, "log_f")[..., 0])

    def project(self, x: Tensor, lm: Tensor) -> tuple[Tensor, Tensor]:
        """[..., L, 3] model points → (uv [..., L, 2] crop pixels, depth [..., L] metres)."""
        xc = lm @ self.rotation(x).transpose(-1, -2) + self.part(x, "trans")[..., None, :]
        depth = -xc[..., 2]
        f = self.focal(x)[..., None]
        u = self.intr.cx + f * xc[..., 0] / depth
        v = self.intr.cy - f * (self.intr.fy / self.intr.fx) * xc[..., 1] / depth
        return torch.stack([u, v], -1), depth

    def data_residuals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(2D [..., L, 2], depth [..., L]) residuals in pixels at 512, unweighted."""
        uv, depth = self.project(x, self.landmarks(x))
        zp = self.focal(x)[..., None] * depth / depth.mean(-1, keepdim=True)
        rz = (zp - zp.mean(-1, keepdim=True)) - (self.obs[:, 2] - self.obs[:, 2].mean())
        return (uv - self.obs[:, :2]) * self.k, rz * self.k

    def residuals(self, x: Tensor) -> Tensor:
        """[..., M] all residuals, weighted so that the loss is ½‖r‖²."""
        r2d, rz = self.data_residuals(x)
        w = torch.sqrt(self.w * self.robust / self.w.sum())
        jaw0 = self.part(x, "jaw")[..., :1]
        closed_past_rest = math.sqrt(200.0 * self.cfg.jaw_prior) * torch.relu(-jaw0)
        beyond = torch.relu(x[..., self.limited].abs() - self.cfg.coeff_limit)
        lead = x.shape[:-1]
        return torch.cat([(w[:, None] * r2d).reshape(*lead, -1), math.sqrt(self.cfg.depth_weight) * w * rz,
                          self.prior_sqrt * x, closed_past_rest, math.sqrt(2 * self.cfg.limit_weight) * beyond], -1)

    def jacobian(self, x: Tensor, active: Tensor) -> Tensor:
        """d residuals / d x[active]: [M, P].

        Models with a batched float64 landmark function (the template) get central
        differences in one batched call (exact to ~1e-9 here, and no torch.func: its first
        use costs ~1.7 s of imports per process); others forward-mode AD (``jacfwd``).
        """
        n = len(active)
        if getattr(self.model, "landmark_points_batch", None) is not None:
            h = 1e-6
            xs = x.repeat(2 * n, 1)
            rows = torch.arange(n)
            xs[rows, active] += h
            xs[rows + n, active] -= h
            r = self.residuals(xs)
            return ((r[:n] - r[n:]) / (2 * h)).T

        def sub(z: Tensor) -> Tensor:
            return self.residuals(torch.index_put(x, (active,), z))

        return torch.func.jacfwd(sub)(x[active])

    def update_robust(self) -> None:
        """Huber as iteratively reweighted least squares: w = min(1, δ / |r|) per landmark."""
        with torch.no_grad():
            r2d, _ = self.data_residuals(self.x)
            norm = torch.linalg.norm(r2d, dim=1)
            self.robust = torch.clamp(self.cfg.huber_px / torch.clamp(norm, min=1e-9), max=1.0)

    def solve(self, names: list[str], iterations: int) -> None:
        """Levenberg–Marquardt on the parameters ``names`` (the rest held fixed)."""
        active = torch.cat([torch.arange(self.slices[n].start, self.slices[n].stop) for n in names])
        lam = 1e-3
        for it in range(iterations):
            if it % 3 == 0:
                self.update_robust()
            x = self.x
            r = self.residuals(x)
            jac = self.jacobian(x, active)  # [M, P]
            cost = float(r @ r)
            hess, grad = jac.T @ jac, jac.T @ r
            improved = False
            for _ in range(8):
                step = torch.linalg.solve(hess + lam * torch.diag(torch.diag(hess) + 1e-9), -grad)
                trial = x.clone()
                trial[active] += step
                new_cost = float((r_new := self.residuals(trial)) @ r_new)
                if math.isfinite(new_cost) and new_cost < cost:
                    self.x, lam, improved = trial, max(lam / 3, 1e-9), True
                    break
                lam *= 4
            if not improved or (cost - new_cost) < 1e-10 * max(cost, 1e-12):
                break

    def weighted_rms(self) -> float:
        """RMS 2D residual (px at 512) with the landmark weights: the noise level σ̂ the data term sees."""
        with torch.no_grad():
            r2d, _ = self.data_residuals(self.x)
            return float(torch.sqrt((self.w * (r2d ** 2).sum(1)).sum() / self.w.sum()))

    def adapt_priors(self) -> bool:
        """Raise the shape/expression weights to σ̂²/N (see the module docstring, step 3).

        Returns True when a weight changed (and the fit should be refined)."""
        cfg = self.cfg
        if cfg.prior_landmarks <= 0:
            return False
        noise = self.weighted_rms() ** 2 / cfg.prior_landmarks
        shape_w, expr_w = max(cfg.shape_prior, noise), max(cfg.expr_prior, noise)
        if shape_w == cfg.shape_prior and expr_w == cfg.expr_prior:
            return False
        log.debug("noise-adaptive priors: shape %.4g, expression %.4g", shape_w, expr_w)
        self.set_priors(shape_w, expr_w)
        return True

    def rms_px(self) -> float:
        """RMS 2D reprojection error over the used landmarks, crop pixels."""
        with torch.no_grad():
            r2d, _ = self.data_residuals(self.x)
            return float(torch.sqrt((r2d ** 2).sum(1).mean())) / self.k


def _rigid_init(prob: _Problem) -> None:
    """Procrustes of model landmarks onto the lifted observations → R0, translation."""
    intr = prob.intr
    with torch.no_grad():
        x = prob.landmarks(prob.x).numpy()
    o = prob.obs.numpy()
    lifted = np.stack([o[:, 0] - intr.cx, -(o[:, 1] - intr.cy), -o[:, 2]], 1)
    s, r, t = umeyama(x, lifted, prob.w.numpy())
    if not (np.isfinite(s) and s > 0):
        raise FloatingPointError("degenerate landmarks")
    prob.r0 = torch.as_tensor(r, dtype=torch.float64)
    prob.x[prob.slices["trans"]] = torch.as_tensor([t[0] / s, t[1] / s, -intr.fx / s], dtype=torch.float64)


def frontal_camera(intr: Intrinsics, head_height: float = 0.26) -> Camera:
    """A camera on −Y looking at the origin, far enough for ``head_height`` to fill ~75 % of the crop."""
    d = intr.fy * head_height / (0.75 * intr.size)
    return Camera(look_at(np.array([0.0, -d, 0.0])), intr.fx, intr.fy, intr.cx, intr.cy, intr.size, intr.size)


def _camera(rot: np.ndarray, trans: np.ndarray, f: float, intr: Intrinsics) -> Camera:
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ trans
    return Camera(c2w, f, f * intr.fy / intr.fx, intr.cx, intr.cy, intr.size, intr.size)


def _fallback(model, intr: Intrinsics, reason: str, ctx, t0: float) -> FitResult:
    msg = f"landmark fit diverged ({reason}); using the mean head seen from the front"
    if ctx is not None:
        ctx.warn("fit_diverged", msg)
    else:
        log.warning(msg)
    cam = frontal_camera(intr)
    with torch.no_grad():
        v = model.vertices(torch.zeros(model.n_shape), torch.zeros(model.n_expr), None)
    w2c = cam.w2c
    return FitResult(v.detach().cpu().numpy().astype(np.float32), cam, np.zeros(model.n_shape),
                     np.zeros(model.n_expr), np.zeros(3), w2c[:3, :3], w2c[:3, 3], float(intr.fx),
                     float("nan"), True, time.perf_counter() - t0)


def _diverged(prob: _Problem, rms: float) -> str | None:
    """Why the fit is not believable, or None."""
    if not torch.isfinite(prob.x).all() or not math.isfinite(rms):
        return "non-finite parameters"
    if rms * prob.k > prob.cfg.max_residual_px:
        return f"RMS reprojection {rms:.1f} px"
    dist = float(-prob.part(prob.x, "trans")[2])
    if not 0.05 < dist < 50.0:
        return f"camera distance {dist:.3g} m"
    if abs(float(prob.part(prob.x, "log_f")[0])) > math.log(4.0):
        return "focal changed more than 4x"
    coeffs = torch.cat([prob.part(prob.x, "shape"), prob.part(prob.x, "expr"), torch.zeros(1, dtype=torch.float64)])
    if float(coeffs.abs().max()) > 8:
        return "coefficients beyond 8 standard deviations"
    return None


def fit_landmarks(model, landmarks: np.ndarray, intr: Intrinsics, config: FitConfig = FitConfig(),
                  ctx=None) -> FitResult:
    """Fit ``model`` (a ``HeadModel``) to mediapipe landmarks of the crop.

    landmarks: [478, 3] crop pixels (x, y; z = mediapipe's relative depth in the same scale).
    Returns the fitted head in the world and the input camera (falls back, with a
    ``fit_diverged`` warning on ``ctx``, when the landmarks cannot be fitted).
    """
    t0 = time.perf_counter()
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < int(np.max(model.landmark_ids)) + 1 or lm.shape[1] != 3:
        return _fallback(model, intr, f"landmarks have shape {lm.shape}", ctx, t0)
    if not np.all(np.isfinite(lm[model.landmark_ids])):
        return _fallback(model, intr, "non-finite landmarks", ctx, t0)
    prob = _Problem(model, lm, intr, config)
    try:
        with _one_thread():
            _rigid_init(prob)
            prob.solve(["rot", "trans"], config.rigid_iterations)
            if ctx is not None:
                ctx.check_cancelled()
            names = ["rot", "trans", "shape", "expr", "jaw"] + (["log_f"] if config.refine_focal else [])
            prob.solve(names, config.iterations)
            if prob.adapt_priors():
                prob.solve(names, config.adaptive_iterations)
    except (FloatingPointError, np.linalg.LinAlgError, torch.linalg.LinAlgError) as exc:
        return _fallback(model, intr, str(exc).splitlines()[0], ctx, t0)
    rms = prob.rms_px()
    reason = _diverged(prob, rms)
    if reason is not None:
        return _fallback(model, intr, reason, ctx, t0)
    x = prob.x
    with torch.no_grad():
        shape, expr, jaw = (prob.part(x, n).numpy().copy() for n in ("shape", "expr", "jaw"))
        verts = model.vertices(*(torch.as_tensor(a, dtype=torch.float32) for a in (shape, expr, jaw)))
        rot = prob.rotation(x).numpy()
        f = float(prob.focal(x))
    trans = prob.part(x, "trans").numpy().copy()
    seconds = time.perf_counter() - t0
    log.info("landmark fit: RMS %.2f px, distance %.3f m, focal %.1f px, %.2f s", rms, -trans[2], f, seconds)
    return FitResult(verts.detach().cpu().numpy().astype(np.float32), _camera(rot, trans, f, intr),
                     shape, expr, jaw, rot, trans, f, rms, False, seconds)


@contextlib.contextmanager
def _one_thread():
    """The fit is ~30 parameters × ~1.4k residuals: thread hand-offs cost more than they give."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
