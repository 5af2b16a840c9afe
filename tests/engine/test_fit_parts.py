"""The landmark fit's parts on a small linear head (fast): rotations, the least-squares problem,
its Levenberg–Marquardt solve, the divergence rules and the fallback.

Expected values come from independent computations: scipy's rotations, ``recon.cameras.Camera``
projections, observations made from known cameras (zero residual at the truth) and the loss
written out from the documented definition.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.context import RunContext
from engine.errors import Cancelled
from engine.prior import fit as fitmod
from engine.prior._template_shape import FACE_OVAL
from engine.prior.fit import FitConfig, Intrinsics, _Problem, fit_landmarks, landmark_weights, so3_exp, umeyama
from recon.cameras import Camera, look_at

S = 256  # crop size: residuals are scaled by 512 / S = 2
K = 512.0 / S


class LinearHead:
    """A head model whose 468 landmarks are linear in shape, expression and jaw (no template)."""

    name = "linear"

    def __init__(self, n_shape: int = 4, n_expr: int = 3, seed: int = 0, batched: bool = True):
        rng = np.random.default_rng(seed)
        self.n_shape, self.n_expr = n_shape, n_expr
        self.landmark_ids = np.arange(468)
        self.faces = np.zeros((0, 3), np.int64)
        self.mean = rng.normal(size=(468, 3)) * [0.07, 0.05, 0.09]
        self.basis = rng.normal(0, 0.006, (n_shape + n_expr + 3, 468, 3))
        if batched:
            self.landmark_points_batch = self._batch
        self.threads_seen: list[int] = []

    def points(self, shape, expr, jaw) -> np.ndarray:
        """[468, 3] float64 from numpy coefficients (the test's own evaluation)."""
        c = np.concatenate([shape, expr, np.zeros(3) if jaw is None else jaw])
        return self.mean + np.tensordot(c, self.basis, 1)

    def _batch(self, shape: torch.Tensor, expr: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        self.threads_seen.append(torch.get_num_threads())
        c = torch.cat([shape, expr, jaw], -1).to(torch.float64)
        return torch.as_tensor(self.mean) + torch.tensordot(c, torch.as_tensor(self.basis), 1)

    def vertices(self, shape, expr, jaw=None) -> torch.Tensor:
        jaw = torch.zeros(3) if jaw is None else jaw
        c = torch.cat([torch.as_tensor(shape), torch.as_tensor(expr), torch.as_tensor(jaw)]).to(torch.float64)
        return (torch.as_tensor(self.mean) + torch.tensordot(c, torch.as_tensor(self.basis), 1)).float()

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        return vertices


def _camera(f: float = 1.2 * S, aspect: float = 1.1) -> Camera:
    c2w = look_at(np.array([0.12, -0.55, 0.06]), np.array([0.01, 0.0, 0.0]))
    return Camera(c2w, f, f * aspect, S / 2 + 3, S / 2 - 5, S, S)


def _observe(points: np.ndarray, cam: Camera) -> np.ndarray:
    """[478, 3] mediapipe-like landmarks (pixels; z = relative depth in the focal's pixels)."""
    uv, depth = cam.project(points)
    z = (depth - depth.mean()) * cam.fx / depth.mean()
    out = np.zeros((478, 3))
    out[: len(points)] = np.concatenate([uv, z[:, None]], 1)
    return out


def _intr(cam: Camera, focal_scale: float = 1.0) -> Intrinsics:
    return Intrinsics(cam.fx * focal_scale, cam.fy * focal_scale, cam.cx, cam.cy, S)


def _at_truth(prob: _Problem, cam: Camera, coeffs: np.ndarray) -> torch.Tensor:
    """The parameter vector of ``cam`` and ``coeffs`` (shape ⊕ expr ⊕ jaw), rotation delta 0."""
    w2c = cam.w2c
    prob.r0 = torch.as_tensor(w2c[:3, :3])
    x = torch.zeros_like(prob.x)
    x[3:6] = torch.as_tensor(w2c[:3, 3])
    x[6] = math.log(cam.fx / prob.intr.fx)
    x[7:] = torch.as_tensor(coeffs)
    return x


@pytest.fixture(scope="module")
def setup():
    head = LinearHead()
    rng = np.random.default_rng(4)
    coeffs = np.concatenate([rng.normal(0, 0.8, 7), [0.1, 0.02, -0.01]])
    cam = _camera()
    obs = _observe(head.points(coeffs[:4], coeffs[4:7], coeffs[7:]), cam)
    return head, cam, coeffs, obs


# -- rotations, similarity, weights --------------------------------------------------------------

def test_so3_exp_matches_scipy_including_tiny_angles():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(0, 1.0, (5, 3)), [[1e-8, -2e-8, 3e-9], [0.0, 0.0, 0.0], [2.5, -1.0, 0.5]]])
    r = so3_exp(torch.as_tensor(w))
    assert r.shape == (8, 3, 3)
    np.testing.assert_allclose(r.numpy(), Rotation.from_rotvec(w).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(so3_exp(torch.as_tensor(w[2])).numpy(), Rotation.from_rotvec(w[2]).as_matrix(), atol=1e-12)


def test_umeyama_uses_the_weights_and_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3))
    r = Rotation.from_rotvec([0.3, -0.2, 0.9]).as_matrix()
    dst = 1.7 * src @ r.T + [0.5, -1.0, 2.0]
    dst[30:] += rng.normal(0, 5.0, (10, 3))  # outliers carrying no weight
    w = np.r_[np.full(30, 2.0), np.zeros(10)]
    s, r2, t = umeyama(src, dst, w)
    assert s == pytest.approx(1.7) and np.allclose(r2, r) and np.allclose(t, [0.5, -1.0, 2.0])
    # a mirrored point set: the best proper rotation, and the scale that is optimal for it
    mirrored = src * [1.0, 1.0, -1.0]
    s, r3, t = umeyama(src, mirrored, np.ones(40))
    assert np.linalg.det(r3) == pytest.approx(1.0)
    a, b = src - src.mean(0), mirrored - mirrored.mean(0)
    assert s == pytest.approx(float((b * (a @ r3.T)).sum() / (a * a).sum()))
    assert np.allclose(t, mirrored.mean(0) - s * r3 @ src.mean(0))


def test_landmark_weights_down_weight_the_face_oval():
    ids = np.arange(468)
    w = landmark_weights(ids, 0.3)
    oval = set(int(i) for i in FACE_OVAL)
    assert [float(x) for x in w] == [0.3 if i in oval else 1.0 for i in range(468)]
    assert 0 < len(oval) < 468


# -- the problem: layout, projection, residuals, Jacobian ------------------------------------------

def test_layout_and_priors():
    head = LinearHead()
    cfg = FitConfig()
    prob = _Problem(head, np.zeros((478, 3)), Intrinsics(300.0, 300.0, 128.0, 128.0, S), cfg)
    assert [(k, s.start, s.stop) for k, s in prob.slices.items()] == [
        ("rot", 0, 3), ("trans", 3, 6), ("log_f", 6, 7), ("shape", 7, 11), ("expr", 11, 14), ("jaw", 14, 17)]
    assert prob.x.shape == (17,) and not prob.x.any() and prob.k == K
    assert torch.equal(prob.r0, torch.eye(3, dtype=torch.float64))
    assert prob.limited.tolist() == [False] * 7 + [True] * 7 + [False] * 3
    expected = [0.0] * 6 + [20.0] + [0.004] * 7 + [40.0, 400.0, 400.0]  # 2·weight
    np.testing.assert_allclose(prob.prior_sqrt.numpy() ** 2, expected, rtol=1e-12)
    prob.set_priors(0.5, 0.25)
    np.testing.assert_allclose(prob.prior_sqrt.numpy()[7:14] ** 2, [1.0] * 4 + [0.5] * 3, rtol=1e-12)
    assert torch.equal(prob.robust, torch.ones(468, dtype=torch.float64))
    np.testing.assert_array_equal(prob.w.numpy(), landmark_weights(np.arange(468), cfg.contour_weight))


def test_projection_and_zero_residuals_at_the_truth(setup):
    head, cam, coeffs, obs = setup
    prob = _Problem(head, obs, _intr(cam, 0.9), FitConfig())
    x = _at_truth(prob, cam, coeffs)
    uv, depth = prob.project(x, prob.landmarks(x))
    uv_ref, depth_ref = cam.project(head.points(coeffs[:4], coeffs[4:7], coeffs[7:]))
    np.testing.assert_allclose(uv.numpy(), uv_ref, atol=1e-9)
    np.testing.assert_allclose(depth.numpy(), depth_ref, atol=1e-12)
    assert float(prob.focal(x)) == pytest.approx(cam.fx)
    r2d, rz = prob.data_residuals(x)
    assert r2d.shape == (468, 2) and rz.shape == (468,)
    assert float(r2d.abs().max()) < 1e-8 and float(rz.abs().max()) < 1e-8
    # batched: two parameter vectors at once give the same as one at a time
    x2 = x.clone()
    x2[3] += 0.01
    uv_b, _ = prob.project(torch.stack([x, x2]), prob.landmarks(torch.stack([x, x2])))
    torch.testing.assert_close(uv_b[1], prob.project(x2, prob.landmarks(x2))[0])


def test_residuals_scale_with_the_crop_and_track_relative_depth(setup):
    head, cam, coeffs, obs = setup
    shifted = obs.copy()
    rng = np.random.default_rng(2)
    off = rng.normal(0, 3.0, (468, 3))
    shifted[:468] += off
    prob = _Problem(head, shifted, _intr(cam), FitConfig())
    x = _at_truth(prob, cam, coeffs)
    r2d, rz = prob.data_residuals(x)
    np.testing.assert_allclose(r2d.numpy(), -off[:, :2] * K, atol=1e-7)
    np.testing.assert_allclose(rz.numpy(), -(off[:, 2] - off[:, 2].mean()) * K, atol=1e-7)


def test_half_squared_residuals_are_the_documented_loss(setup):
    head, cam, coeffs, obs = setup
    cfg = FitConfig(depth_weight=0.3, contour_weight=0.4, coeff_limit=1.0, limit_weight=7.0, jaw_prior=3.0, focal_prior=5.0)
    prob = _Problem(head, obs + np.random.default_rng(3).normal(0, 2.0, obs.shape), _intr(cam, 1.1), cfg)
    prob.robust = torch.as_tensor(np.random.default_rng(4).uniform(0.2, 1.0, 468))
    x = _at_truth(prob, cam, coeffs)
    x[0:3] = torch.tensor([0.01, -0.02, 0.015])
    x[7] = 1.8  # beyond the limit
    x[12] = -1.4
    x[14] = -0.2  # jaw closed past rest
    r = prob.residuals(x)
    r2d, rz = (a.numpy() for a in prob.data_residuals(x))
    w = prob.w.numpy() * prob.robust.numpy() / prob.w.numpy().sum()
    xn = x.numpy()
    jaw_w = np.array([1.0, 10.0, 10.0]) * 3.0
    loss = (0.5 * (w * (r2d ** 2).sum(1)).sum() + 0.5 * 0.3 * (w * rz ** 2).sum()
            + 5.0 * xn[6] ** 2 + 0.002 * (xn[7:14] ** 2).sum() + (jaw_w * xn[14:] ** 2).sum()
            + 0.5 * 200 * 3.0 * 0.2 ** 2 + 7.0 * (np.maximum(np.abs(xn[7:14]) - 1.0, 0) ** 2).sum())
    assert 0.5 * float(r @ r) == pytest.approx(loss, rel=1e-10)
    assert r.shape == (468 * 3 + 17 + 1 + 7,)
    rb = prob.residuals(torch.stack([x, x]))
    torch.testing.assert_close(rb[1], r)


@pytest.mark.parametrize("batched", [True, False])
def test_jacobian_columns_are_the_active_derivatives(setup, batched):
    """Batched central differences, or forward-mode AD for a model without the batched function
    (evaluated in float32), against central differences of the float64 residuals."""
    head, cam, coeffs, obs = setup
    model = head if batched else LinearHead(batched=False)
    prob, ref_prob = _Problem(model, obs + 1.0, _intr(cam), FitConfig()), _Problem(head, obs + 1.0, _intr(cam), FitConfig())
    x = _at_truth(prob, cam, coeffs)
    _at_truth(ref_prob, cam, coeffs)
    active = torch.tensor([0, 4, 6, 9, 15])
    jac = prob.jacobian(x, active)
    assert jac.shape == (len(ref_prob.residuals(x)), 5)
    for col, i in enumerate(active.tolist()):
        h = 1e-5
        e = torch.zeros_like(x)
        e[i] = h
        ref = (ref_prob.residuals(x + e) - ref_prob.residuals(x - e)) / (2 * h)
        tol = 1e-4 if batched else 2e-3
        torch.testing.assert_close(jac[:, col], ref, atol=tol * float(ref.abs().max()), rtol=0)


# -- IRLS, RMS, noise-adaptive priors -------------------------------------------------------------

def _offset_problem(setup, scale: float, cfg: FitConfig = FitConfig()):
    head, cam, coeffs, obs = setup
    off = np.zeros((478, 3))
    off[:468, :2] = np.random.default_rng(8).normal(0, scale, (468, 2))
    prob = _Problem(head, obs + off, _intr(cam), cfg)
    prob.x = _at_truth(prob, cam, coeffs)
    return prob, off[:468, :2]


def test_huber_weights_and_rms(setup):
    prob, off = _offset_problem(setup, 2.0)
    prob.update_robust()
    norm = np.linalg.norm(off, axis=1) * K
    np.testing.assert_allclose(prob.robust.numpy(), np.minimum(1.0, 2.0 / norm), rtol=1e-7)
    assert (prob.robust < 1).any() and (prob.robust == 1).any()
    w = landmark_weights(np.arange(468), 0.3)
    assert prob.weighted_rms() == pytest.approx(math.sqrt((w * (off ** 2).sum(1)).sum() / w.sum()) * K, rel=1e-7)
    assert prob.rms_px() == pytest.approx(math.sqrt((off ** 2).sum(1).mean()), rel=1e-7)


def test_adaptive_priors(setup):
    quiet, _ = _offset_problem(setup, 0.05)
    before = quiet.prior_sqrt.clone()
    assert not quiet.adapt_priors() and torch.equal(quiet.prior_sqrt, before)  # σ̂²/N below the minimum
    noisy, _ = _offset_problem(setup, 3.0)
    noise = noisy.weighted_rms() ** 2 / 30.0
    assert noise > 0.002 and noisy.adapt_priors()
    np.testing.assert_allclose(noisy.prior_sqrt.numpy()[7:14] ** 2, 2 * noise, rtol=1e-10)
    np.testing.assert_allclose(noisy.prior_sqrt.numpy()[14:] ** 2, [40.0, 400.0, 400.0])
    off, _ = _offset_problem(setup, 3.0, FitConfig(prior_landmarks=0))
    assert not off.adapt_priors()
    only_expr, _ = _offset_problem(setup, 3.0, FitConfig(shape_prior=1e3))
    assert only_expr.adapt_priors()
    np.testing.assert_allclose(only_expr.prior_sqrt.numpy()[7:14] ** 2, [2e3] * 4 + [2 * noise] * 3, rtol=1e-10)


# -- init, solve, camera ---------------------------------------------------------------------------

def test_rigid_init_then_solve_recovers_the_pose(setup):
    head, cam, _, _ = setup
    obs = _observe(head.points(np.zeros(4), np.zeros(3), None), cam)
    prob = _Problem(head, obs, _intr(cam), FitConfig())
    fitmod._rigid_init(prob)
    w2c = cam.w2c
    angle = Rotation.from_matrix(prob.r0.numpy() @ w2c[:3, :3].T).magnitude()
    assert np.degrees(angle) < 5.0  # weak-perspective Procrustes: close, not exact
    assert abs(float(prob.x[5]) - w2c[2, 3]) < 0.1 * abs(w2c[2, 3])
    np.testing.assert_allclose(prob.x[3:5].numpy(), w2c[:2, 3], atol=0.005)  # sideways offset: t / s
    prob.solve(["rot", "trans"], 10)
    rot = prob.rotation(prob.x).numpy()
    assert np.degrees(Rotation.from_matrix(rot @ w2c[:3, :3].T).magnitude()) < 1e-4
    np.testing.assert_allclose(prob.x[3:6].numpy(), w2c[:3, 3], atol=1e-6)
    assert not prob.x[6:].any()  # the inactive parameters stay where they were
    assert prob.rms_px() < 1e-5


def test_solve_with_no_iterations_changes_nothing(setup):
    head, cam, _, obs = setup
    prob = _Problem(head, obs, _intr(cam), FitConfig())
    fitmod._rigid_init(prob)
    before = prob.x.clone()
    prob.solve(["rot", "trans"], 0)
    assert torch.equal(prob.x, before)


def test_degenerate_landmarks_raise():
    head = LinearHead()
    at_centre = np.tile([128.0, 128.0, 0.0], (478, 1))  # every landmark on the principal point: no scale
    prob = _Problem(head, at_centre, Intrinsics(300.0, 300.0, 128.0, 128.0, S), FitConfig())
    with pytest.raises(FloatingPointError, match="^degenerate landmarks$"):
        fitmod._rigid_init(prob)


def test_frontal_camera_frames_the_head():
    intr = Intrinsics(400.0, 440.0, 120.0, 130.0, S)
    cam = fitmod.frontal_camera(intr)
    d = 440.0 * 0.26 / (0.75 * S)
    np.testing.assert_allclose(cam.center, [0.0, -d, 0.0], atol=1e-12)
    uv, depth = cam.project(np.array([[0.0, 0.0, 0.13], [0.0, 0.0, -0.13], [0.0, 0.0, 0.0]]))
    assert uv[1, 1] - uv[0, 1] == pytest.approx(0.75 * S)  # 0.26 m tall fills 75 % of the crop
    np.testing.assert_allclose(uv[2], [120.0, 130.0])
    assert (cam.fx, cam.fy, cam.w, cam.h) == (400.0, 440.0, S, S)


def test_camera_from_rotation_and_translation():
    rot = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    trans = np.array([0.01, -0.02, -0.6])
    intr = Intrinsics(300.0, 330.0, 127.0, 125.0, S)
    cam = fitmod._camera(rot, trans, 280.0, intr)
    p = np.array([[0.03, 0.02, -0.01], [-0.05, 0.04, 0.02]])
    xc = p @ rot.T + trans
    uv, depth = cam.project(p)
    np.testing.assert_allclose(depth, -xc[:, 2])
    np.testing.assert_allclose(uv[:, 0], 127.0 + 280.0 * xc[:, 0] / -xc[:, 2])
    np.testing.assert_allclose(uv[:, 1], 125.0 - 280.0 * 1.1 * xc[:, 1] / -xc[:, 2])
    assert (cam.w, cam.h) == (S, S)


# -- divergence, fallback, the whole fit -----------------------------------------------------------

def _fitted(setup, cfg: FitConfig = FitConfig()):
    head, cam, coeffs, obs = setup
    prob = _Problem(head, obs, _intr(cam), cfg)
    prob.x = _at_truth(prob, cam, np.zeros(10))
    prob.x[3:6] = torch.tensor([0.0, 0.0, -1.0])
    return prob


@pytest.mark.parametrize("index, value, reason", [
    (0, float("nan"), "non-finite"), (5, -0.05, "distance"), (5, -50.0, "distance"), (5, 1.0, "distance"),
    (6, math.log(4.0) + 1e-9, "focal"), (6, -math.log(4.0) - 1e-9, "focal"), (8, 8.001, "8 standard"),
    (12, -8.001, "8 standard"), (5, -0.0501, None), (5, -49.9, None), (6, math.log(3.99), None), (8, 8.0, None),
    (16, 9.0, None),  # the jaw is not a shape coefficient
])
def test_divergence_rules(setup, index, value, reason):
    prob = _fitted(setup)
    prob.x[index] = value
    got = fitmod._diverged(prob, 0.0)
    assert (got is None) if reason is None else (reason in got), got


def test_divergence_by_residual(setup):
    prob = _fitted(setup, FitConfig(max_residual_px=10.0))
    assert fitmod._diverged(prob, 10.0 / K) is None
    assert "RMS reprojection" in fitmod._diverged(prob, 10.0 / K + 1e-6)
    assert "non-finite" in fitmod._diverged(prob, float("inf"))


def test_fallback_warns_on_the_context_or_the_log(setup, caplog):
    head, cam, _, _ = setup
    intr = _intr(cam)
    ctx = RunContext()
    t0 = time.perf_counter()
    fb = fitmod._fallback(head, intr, "because", ctx, t0)
    assert [w["code"] for w in ctx.warnings] == ["fit_diverged"] and "because" in ctx.warnings[0]["message"]
    assert fb.diverged and math.isnan(fb.residual_px) and fb.focal == intr.fx and 0 < fb.seconds < 10
    assert fb.shape.shape == (4,) and fb.expr.shape == (3,) and fb.jaw.shape == (3,)
    assert not (fb.shape.any() or fb.expr.any() or fb.jaw.any())
    np.testing.assert_allclose(fb.vertices, head.mean.astype(np.float32), atol=1e-7)
    assert fb.vertices.dtype == np.float32
    front = fitmod.frontal_camera(intr)
    np.testing.assert_allclose(fb.camera.c2w, front.c2w)
    np.testing.assert_allclose(fb.rotation, front.w2c[:3, :3])
    np.testing.assert_allclose(fb.translation, front.w2c[:3, 3])
    with caplog.at_level(logging.WARNING, logger="engine.prior.fit"):
        fitmod._fallback(head, intr, "no context", None, 0.0)
    assert "landmark fit diverged (no context)" in caplog.text


def test_fit_recovers_pose_focal_and_coefficients(setup):
    head, cam, coeffs, obs = setup
    fit = fit_landmarks(head, obs, _intr(cam, 0.9), FitConfig(shape_prior=1e-6, expr_prior=1e-6, jaw_prior=1e-6,
                                                              focal_prior=1e-6, prior_landmarks=0))
    assert not fit.diverged and fit.residual_px < 1e-3 and fit.seconds > 0
    assert fit.focal == pytest.approx(cam.fx, rel=1e-3)
    np.testing.assert_allclose(np.r_[fit.shape, fit.expr, fit.jaw], coeffs, atol=2e-3)
    np.testing.assert_allclose(fit.camera.c2w, cam.c2w, atol=1e-4)
    assert fit.camera.fy == pytest.approx(fit.focal * 1.1)  # the given aspect is kept
    np.testing.assert_allclose(fit.rotation, cam.w2c[:3, :3], atol=1e-4)
    np.testing.assert_allclose(fit.translation, cam.w2c[:3, 3], atol=1e-4)
    np.testing.assert_allclose(fit.vertices, head.points(coeffs[:4], coeffs[4:7], coeffs[7:]), atol=1e-5)


def test_fit_solves_single_threaded_and_restores_the_thread_count(setup):
    """(Not run by scripts/mutation.sh: a 2-thread region in mutmut's parent process deadlocks the
    OpenMP pool of every forked mutant; see the script.)"""
    head, cam, _, obs = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    head.threads_seen.clear()
    try:
        fit_landmarks(head, obs, _intr(cam, 0.9), FitConfig(iterations=5, adaptive_iterations=2))
        assert torch.get_num_threads() == 2  # restored after the fit's single-threaded solve
        seen = head.threads_seen
        assert seen[0] == 1 and seen.count(1) > 10  # the solve ran single-threaded (the final RMS need not)
        ctx = RunContext()
        ctx.cancel()
        with pytest.raises(Cancelled):
            fit_landmarks(head, obs, _intr(cam), FitConfig(), ctx)
        assert torch.get_num_threads() == 2  # restored on the way out
    finally:
        torch.set_num_threads(threads)


def test_fixed_focal_stays_the_given_one(setup):
    head, cam, _, obs = setup
    fit = fit_landmarks(head, obs, _intr(cam, 0.95), FitConfig(refine_focal=False, iterations=5, adaptive_iterations=2))
    assert fit.focal == cam.fx * 0.95
    assert fit.residual_px > 0.1  # the wrong focal cannot be explained away exactly


def test_bad_landmarks_fall_back(setup):
    head, cam, _, obs = setup
    intr = _intr(cam)
    for bad, why in [(obs[:400], "shape"), (obs[:, :2], "shape"), (obs[None], "shape"),
                     (np.tile([intr.cx, intr.cy, 0.0], (478, 1)), "degenerate")]:
        ctx = RunContext()
        fit = fit_landmarks(head, bad, intr, FitConfig(), ctx)
        assert fit.diverged and why in ctx.warnings[0]["message"], why
    nan_used = obs.copy()
    nan_used[100, 1] = np.nan
    ctx = RunContext()
    assert fit_landmarks(head, nan_used, intr, FitConfig(), ctx).diverged and "non-finite" in ctx.warnings[0]["message"]
    nan_unused = obs.copy()
    nan_unused[470:] = np.nan  # beyond the model's landmarks: ignored
    assert not fit_landmarks(head, nan_unused[:468], intr, FitConfig(iterations=3)).diverged
    assert not fit_landmarks(head, nan_unused, intr, FitConfig(iterations=3)).diverged


def test_cancel_after_the_rigid_stage(setup):
    head, cam, _, obs = setup
    ctx = RunContext()
    ctx.cancel()
    head.threads_seen.clear()
    with pytest.raises(Cancelled):
        fit_landmarks(head, obs, _intr(cam), FitConfig(rigid_iterations=2), ctx)
    assert 0 < len(head.threads_seen) < 40  # the rigid stage ran (init + 2 iterations), the joint one did not


# -- added for the mutation run (scripts/mutation.sh fit) -----------------------------------------

def test_so3_exp_series_branch_keeps_the_second_order_term():
    w = np.array([8e-7, -4e-7, 2e-7])  # θ² = 8.4e-13 < 1e-12: the series branch, where (1 − cos θ)/θ² ≈ ½ matters at 1e-13
    np.testing.assert_allclose(so3_exp(torch.as_tensor(w)).numpy(), Rotation.from_rotvec(w).as_matrix(), atol=1e-15, rtol=0)


class FastLandmarkHead(LinearHead):
    """A model with the optional ``landmark_points`` (no batched function): the problem must use it."""

    def __init__(self):
        super().__init__(batched=False)
        self.fast_calls = 0

    def landmark_points(self, shape, expr, jaw):
        self.fast_calls += 1
        return self.vertices(shape, expr, jaw)

    def landmarks(self, vertices):
        raise AssertionError("the fast landmark path was not taken")


def test_landmarks_of_unbatched_models_one_vector_at_a_time(setup):
    head, cam, coeffs, obs = setup
    for model in (LinearHead(batched=False), FastLandmarkHead()):
        prob = _Problem(model, obs, _intr(cam), FitConfig())
        x = _at_truth(prob, cam, coeffs)
        x2 = x.clone()
        x2[7] += 0.5
        one = prob.landmarks(x)
        assert one.dtype == torch.float64 and one.shape == (468, 3)
        np.testing.assert_allclose(one.numpy(), head.points(coeffs[:4], coeffs[4:7], coeffs[7:]), atol=1e-6)
        both = prob.landmarks(torch.stack([x, x2]))
        assert both.shape == (2, 468, 3)
        torch.testing.assert_close(both[1], prob.landmarks(x2))
    assert model.fast_calls == 4


def test_huber_weights_below_one_pixel(setup):
    prob, off = _offset_problem(setup, 0.2, FitConfig(huber_px=0.3))
    prob.update_robust()
    norm = np.linalg.norm(off, axis=1) * K
    assert (norm < 1).mean() > 0.5
    np.testing.assert_allclose(prob.robust.numpy(), np.minimum(1.0, 0.3 / norm), rtol=1e-7)


def test_adaptive_priors_with_one_effective_landmark_and_their_log(setup, caplog):
    noisy, _ = _offset_problem(setup, 0.3, FitConfig(prior_landmarks=1.0))
    noise = noisy.weighted_rms() ** 2
    with caplog.at_level(logging.DEBUG, logger="engine.prior.fit"):
        assert noisy.adapt_priors()
    np.testing.assert_allclose(noisy.prior_sqrt.numpy()[7:14] ** 2, 2 * noise, rtol=1e-10)
    assert caplog.records[-1].getMessage() == f"noise-adaptive priors: shape {noise:.4g}, expression {noise:.4g}"


def test_divergence_messages_and_the_focal_limit(setup):
    prob = _fitted(setup)
    prob.x[6] = math.log(4.0)  # exactly 4x: not "more than"
    assert fitmod._diverged(prob, 0.0) is None
    prob.x[6] = -math.log(4.5)
    assert fitmod._diverged(prob, 0.0) == "focal changed more than 4x"
    prob = _fitted(setup)
    prob.x[9] = 9.0
    assert fitmod._diverged(prob, 0.0) == "coefficients beyond 8 standard deviations"
    prob.x[0] = float("inf")
    assert fitmod._diverged(prob, 0.0) == "non-finite parameters"


def test_fit_result_types_timing_and_log(setup, caplog):
    head, cam, _, obs = setup
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="engine.prior.fit"):
        fit = fit_landmarks(head, obs, _intr(cam), FitConfig(iterations=5, adaptive_iterations=2))
    wall = time.perf_counter() - start
    assert fit.diverged is False and 0 < fit.seconds <= wall
    assert fit.vertices.dtype == np.float32
    assert caplog.records[-1].getMessage() == (f"landmark fit: RMS {fit.residual_px:.2f} px, distance "
                                               f"{-fit.translation[2]:.3f} m, focal {fit.focal:.1f} px, {fit.seconds:.2f} s")


def test_final_divergence_check_falls_back(setup):
    """A fit that converges but misses max_residual_px: the fallback, with the reason, on the context."""
    head, cam, _, obs = setup
    noisy = obs + np.random.default_rng(5).normal(0, 2.0, obs.shape)
    intr = _intr(cam)
    ctx = RunContext()
    start = time.perf_counter()
    fit = fit_landmarks(head, noisy, intr, FitConfig(iterations=5, adaptive_iterations=2, max_residual_px=0.5), ctx)
    wall = time.perf_counter() - start
    assert fit.diverged is True and math.isnan(fit.residual_px) and 0 < fit.seconds <= wall
    assert [w["code"] for w in ctx.warnings] == ["fit_diverged"]
    msg = ctx.warnings[0]["message"]
    assert msg.startswith("landmark fit diverged (RMS reprojection ") and msg.endswith(
        " px); using the mean head seen from the front")
    np.testing.assert_allclose(fit.camera.c2w, fitmod.frontal_camera(intr).c2w)
    np.testing.assert_allclose(fit.vertices, head.mean.astype(np.float32), atol=1e-7)


def test_one_landmark_short_falls_back(setup):
    head, cam, _, obs = setup
    ctx = RunContext()
    fit = fit_landmarks(head, obs[:467], _intr(cam), FitConfig(), ctx)
    assert fit.diverged and ctx.warnings[0]["message"] == (
        "landmark fit diverged (landmarks have shape (467, 3)); using the mean head seen from the front")
    nan = obs.copy()
    nan[3, 0] = np.inf
    ctx = RunContext()
    fit_landmarks(head, nan, _intr(cam), FitConfig(), ctx)
    assert ctx.warnings[0]["message"] == "landmark fit diverged (non-finite landmarks); using the mean head seen from the front"


def test_levenberg_marquardt_never_accepts_a_step_that_raises_the_cost(setup):
    """From a rotation 1.5 rad off (Gauss-Newton overshoots there), one iteration at a time with the
    Huber reweighting off: the ½‖r‖² loss never rises, and the fit still converges."""
    head, cam, _, obs = setup
    prob = _Problem(head, obs, _intr(cam), FitConfig(huber_px=1e9))
    prob.x = _at_truth(prob, cam, np.zeros(10))
    prob.x[0:3] = torch.tensor([1.5, -0.75, 0.5], dtype=torch.float64)
    costs = []
    for _ in range(12):
        costs.append(float(prob.residuals(prob.x) @ prob.residuals(prob.x)))
        prob.solve(["rot", "trans", "shape", "expr", "jaw", "log_f"], 1)
    costs.append(float(prob.residuals(prob.x) @ prob.residuals(prob.x)))
    assert all(b <= a for a, b in zip(costs, costs[1:])), costs
    assert costs[-1] < 1e-3 * costs[0]
