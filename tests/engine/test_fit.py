"""Landmark fitting recovers known cameras and coefficients; divergence falls back with a warning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.context import RunContext
from engine.prior import template
from engine.prior.fit import FitConfig, Intrinsics, fit_landmarks, umeyama
from recon.cameras import Camera, look_at

from .flame_fixtures import make_flame_arrays, write_embedding, write_flame_numpy

S = 512


@pytest.fixture(scope="module")
def head():
    return template.TemplateHead(template.generate())


def _observe(points: np.ndarray, cam: Camera, noise: float, seed: int = 0) -> np.ndarray:
    """[478, 3] mediapipe-like landmarks: pixels + relative depth in the same scale."""
    uv, depth = cam.project(points)
    z = (depth - depth.mean()) * cam.fx / depth.mean()
    return np.concatenate([uv, z[:, None]], 1) + np.random.default_rng(seed).normal(0, noise, (len(points), 3))


def _rot_err_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))


def _true_camera() -> Camera:
    f = 1.2 * S
    return Camera(look_at(np.array([0.12, -0.55, 0.06]), np.array([0.01, 0.0, 0.0])), f, f, S / 2 + 3, S / 2 - 5, S, S)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    r, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    r *= np.sign(np.linalg.det(r))
    dst = 2.5 * src @ r.T + np.array([1.0, -2.0, 3.0])
    s, r2, t = umeyama(src, dst, np.ones(50))
    assert s == pytest.approx(2.5) and np.allclose(r2, r) and np.allclose(t, [1, -2, 3])


def test_template_recovers_known_parameters(head):
    rng = np.random.default_rng(0)
    shape, expr, jaw = rng.normal(0, 0.7, head.n_shape), rng.normal(0, 0.5, head.n_expr), np.array([0.12, 0, 0])
    with torch.no_grad():
        v = head.vertices(*(torch.tensor(a, dtype=torch.float32) for a in (shape, expr, jaw)))
        truth = head.all_landmarks(v).numpy().astype(np.float64)
    cam = _true_camera()
    obs = _observe(truth, cam, noise=0.3)
    ctx = RunContext()
    fit = fit_landmarks(head, obs, Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, S), FitConfig(), ctx)
    assert not fit.diverged and not ctx.warnings
    assert _rot_err_deg(fit.camera.c2w[:3, :3], cam.c2w[:3, :3]) < 2.0
    with torch.no_grad():
        fitted = head.all_landmarks(torch.as_tensor(fit.vertices)).numpy()
    uv_fit, _ = fit.camera.project(fitted[:468])
    uv_true, _ = cam.project(truth[:468])
    assert np.sqrt(((uv_fit - uv_true) ** 2).sum(1).mean()) < 1.0
    assert np.abs(fit.shape - shape).max() < 0.6  # overall head size trades against distance
    assert np.abs(fit.expr - expr).max() < 0.3
    assert abs(fit.jaw[0] - jaw[0]) < 0.03
    assert np.linalg.norm(fit.camera.center - cam.center) < 0.02
    assert fit.camera.w == S and fit.camera.h == S and fit.camera.cx == cam.cx


def test_flame_fixture_model(tmp_path):
    from engine.prior.flame import load_flame

    arrays = make_flame_arrays()
    pkl = write_flame_numpy(tmp_path / "FLAME" / "generic_model.pkl", arrays)
    emb = write_embedding(tmp_path / "FLAME" / "mediapipe_landmark_embedding.npz", arrays, n=105)
    model = load_flame(pkl, emb, n_shape=20, n_expr=10, cache_root=tmp_path / "cache")
    rng = np.random.default_rng(3)
    shape, expr = rng.normal(0, 0.5, model.n_shape), rng.normal(0, 0.5, model.n_expr)
    with torch.no_grad():
        v = model.vertices(torch.tensor(shape, dtype=torch.float32), torch.tensor(expr, dtype=torch.float32))
        lm = model.landmarks(v).numpy().astype(np.float64)
    full = np.zeros((478, 3))
    full[model.landmark_ids] = lm
    cam = _true_camera()
    obs = _observe(full, cam, noise=0.2)
    fit = fit_landmarks(model, obs, Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, S), FitConfig(refine_focal=False))
    assert not fit.diverged
    assert _rot_err_deg(fit.camera.c2w[:3, :3], cam.c2w[:3, :3]) < 2.0
    with torch.no_grad():
        fitted = model.landmarks(torch.as_tensor(fit.vertices)).numpy()
    uv_fit, _ = fit.camera.project(fitted)
    uv_true, _ = cam.project(lm)
    assert np.sqrt(((uv_fit - uv_true) ** 2).sum(1).mean()) < 1.0


@pytest.mark.parametrize("kind", ["nan", "garbage", "collapsed"])
def test_divergence_falls_back_and_warns(head, kind):
    rng = np.random.default_rng(7)
    if kind == "nan":
        obs = np.full((478, 3), np.nan)
    elif kind == "garbage":
        obs = rng.uniform(0, S, (478, 3))
    else:
        obs = np.full((478, 3), 100.0)
    ctx = RunContext()
    fit = fit_landmarks(head, obs, Intrinsics(600.0, 600.0, S / 2, S / 2, S), FitConfig(), ctx)
    assert fit.diverged
    assert [w["code"] for w in ctx.warnings] == ["fit_diverged"]
    assert np.all(fit.shape == 0) and np.all(np.isfinite(fit.vertices))
    assert fit.camera.center[1] < -0.2 and abs(fit.camera.center[0]) < 1e-9  # frontal, on −Y
    uv, depth = fit.camera.project(np.zeros((1, 3)))
    assert np.allclose(uv, [[S / 2, S / 2]]) and depth[0] > 0


def _synthetic_obs(head, shape, noise, seed=0):
    with torch.no_grad():
        v = head.vertices(torch.tensor(shape, dtype=torch.float32), torch.zeros(head.n_expr), None)
        truth = head.all_landmarks(v).numpy().astype(np.float64)
    cam = _true_camera()
    return _observe(truth, cam, noise=noise, seed=seed), Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, S)


def test_coefficients_soft_limited(head):
    """A head beyond human variation (nose 5σ long) is fitted within about ``coeff_limit``."""
    shape = np.zeros(head.n_shape)
    shape[head.shape_names.index("nose_length")] = 5.0
    shape[head.shape_names.index("mouth_width")] = -4.0
    obs, intr = _synthetic_obs(head, shape, noise=0.3)
    free = fit_landmarks(head, obs, intr, FitConfig(coeff_limit=100.0))
    limited = fit_landmarks(head, obs, intr, FitConfig())
    assert np.abs(free.shape).max() > 3.5  # without the limit the data pull it far out
    assert np.abs(limited.shape).max() < 2.5 + 0.3
    assert not limited.diverged


def test_noisy_landmarks_get_a_stronger_prior(head):
    """σ̂²/N: landmarks the model cannot explain shrink the coefficients instead of bending the head."""
    rng = np.random.default_rng(5)
    obs, intr = _synthetic_obs(head, rng.normal(0, 0.7, head.n_shape), noise=3.0, seed=5)
    fixed = fit_landmarks(head, obs, intr, FitConfig(prior_landmarks=0))
    adaptive = fit_landmarks(head, obs, intr, FitConfig())
    assert np.linalg.norm(adaptive.shape) < 0.8 * np.linalg.norm(fixed.shape)
    assert adaptive.residual_px < fixed.residual_px + 1.0  # still on the landmarks


def test_finite_difference_jacobian_matches_forward_mode(head):
    """The template's batched central differences agree with torch.func.jacfwd (the FLAME path)."""
    from types import SimpleNamespace

    from engine.prior.fit import _Problem

    rng = np.random.default_rng(2)
    shape, expr = rng.normal(0, 0.7, head.n_shape), rng.normal(0, 0.5, head.n_expr)
    jaw = np.array([0.1, 0.01, -0.01])
    obs, intr = _synthetic_obs(head, shape, noise=1.0)
    with torch.no_grad():
        batch = head.landmark_points_batch(torch.tensor(np.stack([shape, shape])), torch.tensor(np.stack([expr, expr])),
                                           torch.tensor(np.stack([jaw, jaw])))
        single = head.landmark_points(*(torch.tensor(a, dtype=torch.float32) for a in (shape, expr, jaw)))
    assert batch.shape == (2, 468, 3) and batch.dtype == torch.float64
    assert torch.allclose(batch[1].float(), single, atol=1e-6)
    # the same model without the batched function takes the jacfwd path
    plain = SimpleNamespace(**{k: getattr(head, k) for k in ("landmark_ids", "n_shape", "n_expr", "faces")},
                            landmark_points=head.landmark_points, landmarks=head.landmarks, vertices=head.vertices)
    fd_prob, ad_prob = _Problem(head, obs, intr, FitConfig()), _Problem(plain, obs, intr, FitConfig())
    x = torch.as_tensor(rng.normal(0, 0.3, len(fd_prob.x)))
    x[3:6] = torch.tensor([0.0, 0.0, -0.6])  # in front of the camera
    active = torch.arange(len(x))
    j_fd, j_ad = fd_prob.jacobian(x, active), ad_prob.jacobian(x, active)
    assert j_fd.shape == j_ad.shape
    assert torch.allclose(j_fd, j_ad, rtol=1e-3, atol=1e-3 * float(j_ad.abs().max()))
