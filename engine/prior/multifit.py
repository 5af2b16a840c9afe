"""One head fitted to the landmarks of several photos of one person (``fit_landmarks`` × K, joined).

Each photo keeps its own camera (rotation, translation, focal) and its own expression and
jaw (or one shared expression, ``shared_expression``); the identity shape is one vector for
all photos. Every photo is first fitted alone (``fit.fit_landmarks``: rigid init and the
noise-adaptive priors), then one Levenberg–Marquardt refines all blocks together: the
residuals of photo k depend only on its own block and the shape, so the Jacobian is
assembled block by block (the template's batched central differences per photo). The shape
prior is shared (counted once, not K times), so more photos let the data speak more.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .fit import FitConfig, FitResult, Intrinsics, _camera, _one_thread, _Problem, fit_landmarks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MultiFit:
    """fits: one ``FitResult`` per photo, all with the same ``shape`` (and, with a shared
    expression, the same ``expr``/``jaw``); vertices of fits[k] are the head with photo k's
    expression; rms_px: [K] RMS reprojection per photo (crop pixels); seconds: wall time."""

    fits: list[FitResult]
    rms_px: list[float]
    seconds: float


class _Joint:
    """The K problems as one parameter vector: [block_0, …, block_{K−1}, shape (, expr, jaw)]."""

    def __init__(self, probs: list[_Problem], shared_expression: bool):
        self.probs, self.shared_expression = probs, shared_expression
        p0 = probs[0]
        self.own = ["rot", "trans", "log_f"] + ([] if shared_expression else ["expr", "jaw"])
        self.common = ["shape"] + (["expr", "jaw"] if shared_expression else [])
        self.own_idx = torch.cat([torch.arange(p0.slices[n].start, p0.slices[n].stop) for n in self.own])
        self.common_idx = torch.cat([torch.arange(p0.slices[n].start, p0.slices[n].stop) for n in self.common])
        self.n_own, self.n_common = len(self.own_idx), len(self.common_idx)
        k = len(probs)
        common = torch.stack([p.x[self.common_idx] for p in probs]).mean(0)
        self.z = torch.cat([p.x[self.own_idx] for p in probs] + [common])
        # the shape (and shared expression) prior once, not once per photo
        for p in probs:
            scale = torch.ones_like(p.prior_sqrt)
            scale[self.common_idx] = 1.0 / math.sqrt(k)
            p.prior_sqrt = p.prior_sqrt * scale

    def x_of(self, z: torch.Tensor, k: int) -> torch.Tensor:
        x = self.probs[k].x.clone()
        x[self.own_idx] = z[k * self.n_own:(k + 1) * self.n_own]
        x[self.common_idx] = z[len(self.probs) * self.n_own:]
        return x

    def residuals(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.residuals(self.x_of(z, k)) for k, p in enumerate(self.probs)])

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """[M, P] block-sparse: photo k's rows depend on its block and the common columns."""
        blocks = [p.jacobian(self.x_of(z, k), torch.cat([self.own_idx, self.common_idx]))
                  for k, p in enumerate(self.probs)]
        m = sum(b.shape[0] for b in blocks)
        jac = torch.zeros(m, len(z), dtype=torch.float64)
        row, kk = 0, len(self.probs)
        for k, b in enumerate(blocks):
            jac[row:row + len(b), k * self.n_own:(k + 1) * self.n_own] = b[:, :self.n_own]
            jac[row:row + len(b), kk * self.n_own:] = b[:, self.n_own:]
            row += len(b)
        return jac

    def solve(self, iterations: int) -> None:
        lam = 1e-3
        for it in range(iterations):
            if it % 3 == 0:
                for k, p in enumerate(self.probs):
                    p.x = self.x_of(self.z, k)
                    p.update_robust()
            r = self.residuals(self.z)
            cost = float(r @ r)
            jac = self.jacobian(self.z)
            hess, grad = jac.T @ jac, jac.T @ r
            improved, new_cost = False, cost
            for _ in range(8):
                step = torch.linalg.solve(hess + lam * torch.diag(torch.diag(hess) + 1e-9), -grad)
                trial = self.z + step
                new_cost = float((rn := self.residuals(trial)) @ rn)
                if math.isfinite(new_cost) and new_cost < cost:
                    self.z, lam, improved = trial, max(lam / 3, 1e-9), True
                    break
                lam *= 4
            if not improved or (cost - new_cost) < 1e-10 * max(cost, 1e-12):
                break
        for k, p in enumerate(self.probs):
            p.x = self.x_of(self.z, k)


def fit_many(model, landmarks: list[np.ndarray], intrinsics: list[Intrinsics], config: FitConfig = FitConfig(),
             ctx=None, shared_expression: bool = False, iterations: int = 15) -> MultiFit:
    """Fit one identity to several photos' landmarks ([478, 3] crop pixels each, with their crops' intrinsics).

    A photo whose own fit diverges keeps its own (fallback) fit and does not join the shape.
    """
    t0 = time.perf_counter()
    singles = [fit_landmarks(model, lm, intr, config, ctx) for lm, intr in zip(landmarks, intrinsics)]
    good = [k for k, f in enumerate(singles) if not f.diverged]
    if len(good) < 2:
        return MultiFit(singles, [f.residual_px for f in singles], time.perf_counter() - t0)
    probs = []
    for k in good:
        f = singles[k]
        p = _Problem(model, np.asarray(landmarks[k], np.float64), intrinsics[k], config)
        p.r0 = torch.as_tensor(f.rotation, dtype=torch.float64)
        p.x[p.slices["trans"]] = torch.as_tensor(f.translation, dtype=torch.float64)
        p.x[p.slices["log_f"]] = math.log(f.focal / intrinsics[k].fx)
        for name, val in (("shape", f.shape), ("expr", f.expr), ("jaw", f.jaw)):
            p.x[p.slices[name]] = torch.as_tensor(val, dtype=torch.float64)
        p.adapt_priors()
        probs.append(p)
    joint = _Joint(probs, shared_expression)
    with _one_thread():
        joint.solve(iterations)
    fits = list(singles)
    for k, p in zip(good, probs):
        fits[k] = _result(model, p, intrinsics[k], singles[k])
    log.info("joint fit of %d photos: RMS %s px", len(good), [round(f.residual_px, 2) for f in fits])
    return MultiFit(fits, [f.residual_px for f in fits], time.perf_counter() - t0)


def _result(model, p: _Problem, intr: Intrinsics, single: FitResult) -> FitResult:
    x = p.x
    with torch.no_grad():
        shape, expr, jaw = (p.part(x, n).numpy().copy() for n in ("shape", "expr", "jaw"))
        verts = model.vertices(*(torch.as_tensor(a, dtype=torch.float32) for a in (shape, expr, jaw)))
        rot = p.rotation(x).numpy()
        f = float(p.focal(x))
    trans = p.part(x, "trans").numpy().copy()
    return replace(single, vertices=verts.detach().cpu().numpy().astype(np.float32),
                   camera=_camera(rot, trans, f, intr), shape=shape, expr=expr, jaw=jaw, rotation=rot,
                   translation=trans, focal=f, residual_px=p.rms_px())
