"""recon.fields: the tri-plane encoding, the NeuS field's initialisation, gradients and opacity,
each against values computed by hand (grid vertices, linear SDFs, the logistic CDF)."""
from __future__ import annotations

import math

import pytest
import torch

from recon.fields import FieldConfig, NeuSField, TriPlane, neus_alpha

SMALL = FieldConfig(plane_resolutions=(3, 5), features_per_level=2, hidden=8, geo_features=3)


def _vertex_index(x: float, r: int) -> int:
    """Grid vertex of coordinate x on r vertices spanning [-1, 1] (align_corners)."""
    i = (x + 1) / 2 * (r - 1)
    assert abs(i - round(i)) < 1e-9
    return round(i)


def test_triplane_at_grid_vertices_and_midpoints():
    enc = TriPlane(SMALL)
    assert enc.out_dim == 2 * 3 * 2 and enc.n_levels == 2 and enc.n_active == 2
    for p in enc.planes:  # small random start, not all zero
        assert p.abs().max() <= 1e-2 and p.abs().max() > 0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in enc.planes:
            p.copy_(torch.randn(p.shape, generator=g))
    pts = [(0.0, 1.0, -1.0), (-1.0, 0.0, 1.0), (1.0, -1.0, 0.0)]
    out = enc(torch.tensor(pts))
    assert out.shape == (3, 12)
    for n, x in enumerate(pts):
        for p, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):  # planes xy, xz, yz; width = first axis
            for level, r in enumerate(SMALL.plane_resolutions):
                plane = enc.planes[level][p]
                expected = plane[:, _vertex_index(x[b], r), _vertex_index(x[a], r)]
                got = out[n, p * 4 + level * 2: p * 4 + level * 2 + 2]
                assert torch.allclose(got, expected, atol=1e-6), (n, p, level)
    # halfway between two vertices of the coarse level (x = 0.5 on 3 vertices): their mean
    mid = enc(torch.tensor([[0.5, 1.0, -1.0]]))
    plane = enc.planes[0][0]
    assert torch.allclose(mid[0, 0:2], (plane[:, 2, 1] + plane[:, 2, 2]) / 2, atol=1e-6)


def test_triplane_coarse_to_fine_mask():
    enc = TriPlane(SMALL)
    x = torch.rand(4, 3) * 2 - 1
    full = enc(x)
    enc.set_active_levels(1)
    assert enc.n_active == 1
    part = enc(x).view(4, 3, 2, 2)  # [n, plane, level, feature]
    assert torch.equal(part[:, :, 1], torch.zeros(4, 3, 2))
    assert torch.equal(part[:, :, 0], full.view(4, 3, 2, 2)[:, :, 0])
    enc.set_active_levels(0)
    assert enc.n_active == 1  # at least one level
    enc.set_active_levels(7.9)
    assert enc.n_active == 2 and torch.equal(enc(x), full)


def test_field_starts_on_the_sphere_and_s_is_clamped():
    field = NeuSField(FieldConfig(plane_resolutions=(4, 8), hidden=8, sphere_radius=0.4, init_inv_s=30.0))
    x = torch.rand(50, 3) * 2 - 1
    sdf, feat = field.geometry(x)
    assert torch.allclose(sdf, x.norm(dim=-1) - 0.4, atol=1e-6) and feat.shape == (50, 15)
    assert torch.equal(field.sdf(x), sdf)
    assert feat.abs().sum() > 0  # only the SDF output starts at zero
    assert float(field.inv_s) == pytest.approx(30.0)
    with torch.no_grad():
        field.log_inv_s.fill_(20.0)
        assert float(field.inv_s) == pytest.approx(1e5)
        field.log_inv_s.fill_(-3.0)
        assert float(field.inv_s) == 1.0
    rgb = field.colour(x, feat)
    assert rgb.shape == (50, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    assert not torch.allclose(field.colour(x, feat + 1), rgb)  # the colour reads the features


def test_prior_grid_is_indexed_ix_iy_iz_and_its_gradient_is_exact():
    r = 5
    axis = torch.linspace(-1, 1, r)
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    prior = 2 * gx + 3 * gy - gz + 0.25  # linear: trilinear interpolation reproduces it exactly
    field = NeuSField(FieldConfig(plane_resolutions=(4,), hidden=8), prior_sdf=prior)
    x = torch.tensor([[0.5, -1.0, 0.0], [0.3, 0.2, -0.7], [-0.61, 0.44, 0.1]])
    expected = 2 * x[:, 0] + 3 * x[:, 1] - x[:, 2] + 0.25
    assert torch.allclose(field.base_sdf(x), expected, atol=1e-5)
    assert torch.allclose(field.sdf(x), expected, atol=1e-5)
    grad = field.sdf_gradient(x[1:], 1e-2)
    assert torch.allclose(grad, torch.tensor([[2.0, 3.0, -1.0]] * 2), atol=1e-3)
    rand = torch.randn(r, r, r)  # a non-symmetric grid: a transposed index would read other values
    field = NeuSField(FieldConfig(plane_resolutions=(4,), hidden=8), prior_sdf=rand)
    pts = torch.tensor([[-1.0, -0.5, 1.0], [0.5, 0.0, -1.0]])
    assert torch.allclose(field.base_sdf(pts), torch.stack([rand[0, 1, 4], rand[3, 2, 0]]), atol=1e-6)


def test_sphere_gradient_is_the_radial_direction():
    field = NeuSField(FieldConfig(plane_resolutions=(4,), hidden=8))
    x = torch.tensor([[0.3, 0.4, 0.0], [0.0, -0.5, 0.5]])
    assert torch.allclose(field.sdf_gradient(x, 1e-3), x / x.norm(dim=-1, keepdim=True), atol=1e-3)


def test_neus_alpha_against_the_logistic_cdf():
    def sig(v):
        return 1 / (1 + math.exp(-v))

    start, end, s = [0.1, 0.02, -0.05, 0.3], [-0.1, 0.01, 0.05, -0.3], 10.0
    expected = [max((sig(a * s) - sig(b * s)) / (sig(a * s) + 1e-5), 0.0) for a, b in zip(start, end)]
    got = neus_alpha(torch.tensor(start, dtype=torch.float64), torch.tensor(end, dtype=torch.float64),
                     torch.tensor(s, dtype=torch.float64))
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-9)
    assert expected[2] == 0.0 and 0.6 < expected[0] < 0.65  # leaving a surface is transparent
    big = neus_alpha(torch.tensor([50.0]), torch.tensor([-50.0]), torch.tensor(1.0))
    assert float(big) == pytest.approx(1.0, abs=1e-4) and float(big) <= 1.0
