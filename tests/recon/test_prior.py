"""A prior that misses a part ("ear") must not trap NeuS: the views' surface outside the
prior is recovered (issue 4), and an open / cracked prior still has a proper inside."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from recon.api import ReconConfig, fit
from recon.dataset import load_transforms
from recon.harness import TexturedMesh, _pattern, cameras, write_dataset
from recon.sampling import SceneBox, mesh_sdf_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

R = 0.1
EAR = np.array([1.0, 0.0, 0.0])  # the bump points along +X


def _ball(bump: float) -> TexturedMesh:
    """A sphere of radius R with a smooth bump of height ``bump``·R along +X."""
    s = trimesh.creation.icosphere(subdivisions=4)
    d = np.asarray(s.vertices)
    r = R * (1 + bump * np.exp(-np.sum((d - EAR) ** 2, 1) / 0.08))
    v = d * r[:, None]
    return TexturedMesh(v, np.asarray(s.faces, np.int64), _pattern(v, R / 4))


@pytest.fixture(scope="module")
def bumped(tmp_path_factory):
    gt = _ball(0.5)
    path = write_dataset(gt, cameras(8, 64), tmp_path_factory.mktemp("bump"))
    return load_transforms(path)


def _fit_sdf_along_ear(views, prior_hull: bool) -> np.ndarray:
    prior = _ball(0.0)  # the template: no bump at all
    cfg = ReconConfig(steps=150, batch_rays=512, prior_grid=48, occupancy_resolution=32, texture=False,
                      prior_hull=prior_hull)
    fitted = fit(views, cfg, (prior.vertices, prior.faces))
    radii = np.array([1.15, 1.25]) * R  # between the prior (R) and the bump's tip (1.5 R)
    return fitted.sdf_world(radii[:, None] * EAR)


def test_surface_missing_from_the_prior_is_recovered(bumped):
    """Within 150 steps the surface grows at least half-way up the bump (1.25 R of 1.5 R)."""
    sdf = _fit_sdf_along_ear(bumped, prior_hull=True)
    assert (sdf < 0).all(), sdf  # inside the recovered bump


def test_trusting_the_prior_alone_cuts_the_bump_off(bumped):
    """The old behaviour (occupancy seeded near the prior only): the bump is never sampled."""
    sdf = _fit_sdf_along_ear(bumped, prior_hull=False)
    assert sdf[1] > 0, sdf  # stuck below 1.25 R


def test_cracked_prior_sdf_is_negative_inside():
    """A sphere split open along a seam and pulled apart (as Laplacian smoothing does to a
    textured head whose vertices are duplicated at UV seams): filling the interior would
    leak through the crack; the pseudo-normal sign does not."""
    s = trimesh.creation.icosphere(subdivisions=3)
    v, f = np.asarray(s.vertices) * R, np.asarray(s.faces)
    keep = ~((v[f][:, :, 0] > 0).all(1) & (np.abs(v[f][:, :, 1]) < 0.02).any(1))  # a crack around +X
    box = SceneBox(np.zeros(3), 1.5 * R)
    sdf = mesh_sdf_grid(v, f[keep], box, res=40)
    centre, corner = sdf[20, 20, 20], sdf[0, 0, 0]
    assert centre < -0.5 and corner > 0.5
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"), -1)
    inside = np.linalg.norm(g, axis=-1) < 1 / 1.5 - 0.1
    outside = np.linalg.norm(g, axis=-1) > 1 / 1.5 + 0.1
    assert (sdf[inside] < 0).mean() > 0.99 and (sdf[outside] > 0).mean() > 0.99
