"""The built-in head: a closed 2-manifold head of real proportions with a landmark embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from engine.prior import template
from engine.prior._template_preview import render
from engine.prior._template_shape import FACE_OVAL, canonical_landmarks
from engine.prior.model import HeadModel


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return template.generate()


@pytest.fixture(scope="module")
def head(data):
    return template.TemplateHead(data)


def test_closed_manifold_genus_zero(data):
    mesh = trimesh.Trimesh(data.vertices, data.faces, process=False)
    assert len(data.vertices) >= 5000
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2
    assert mesh.volume > 0  # outward normals
    assert len(mesh.split(only_watertight=False)) == 1


def test_proportions_and_orientation(data, head):
    v = data.vertices
    ext = v.max(0) - v.min(0)
    assert 0.14 < ext[0] < 0.18  # ear to ear
    assert 0.19 < ext[1] < 0.25  # nose to back of the head
    head_part = v[v[:, 2] > -0.125]  # above the neck
    assert 0.21 < head_part[:, 2].max() - head_part[:, 2].min() < 0.26  # crown to chin
    assert abs(head_part[:, :2].mean(0)).max() < 0.02 and abs(head_part[:, 2].mean()) < 0.03  # centred
    with torch.no_grad():
        lm = head.all_landmarks(torch.as_tensor(v, dtype=torch.float32)).numpy()
    nose = lm[4]
    face = v[(np.abs(v[:, 0]) < 0.06) & (v[:, 2] > nose[2] - 0.05) & (v[:, 2] < nose[2] + 0.05)]
    assert nose[1] < face[:, 1].min() + 0.002  # the nose tip is the front-most point: face toward −Y
    assert lm[33, 0] < 0 < lm[263, 0]  # mediapipe's image-left eye corner is on −X (viewer's left)
    assert lm[10, 2] > lm[4, 2] > lm[152, 2]  # forehead above nose above chin


def _assert_same_data(a, b):
    for name in ("vertices", "faces", "shape_basis", "expr_basis", "jaw_weights", "jaw_pivot", "lmk_face_idx", "lmk_bary"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_deterministic(data):
    again = template.generate()
    _assert_same_data(again, data)  # the arrays themselves, not only the digest
    assert again.digest() == data.digest()
    moved = template.TemplateData(**{**data.__dict__, "vertices": data.vertices + 1e-9})
    assert moved.digest() != data.digest()  # the digest sees a change


def test_landmark_embedding(data):
    n_faces = len(data.faces)
    assert data.lmk_face_idx.shape == (478,) and data.lmk_bary.shape == (478, 3)
    assert (data.lmk_face_idx >= 0).all() and (data.lmk_face_idx < n_faces).all()
    assert np.allclose(data.lmk_bary.sum(1), 1) and (data.lmk_bary >= 0).all()
    on = (data.lmk_bary[:, :, None] * data.vertices[data.faces[data.lmk_face_idx]]).sum(1)
    err = np.linalg.norm(on - canonical_landmarks(), axis=1)
    inner = np.setdiff1d(np.arange(468), FACE_OVAL)
    assert np.median(err[inner]) < 0.002  # the face is the canonical face
    assert err[:468].max() < 0.01


def test_head_model_interface(head):
    assert isinstance(head, HeadModel)
    assert head.name == "template" and head.faces.shape[1] == 3
    assert set(head.landmark_ids.tolist()) == set(range(468))
    shape = torch.zeros(head.n_shape, requires_grad=True)
    expr = torch.zeros(head.n_expr, requires_grad=True)
    jaw = torch.zeros(3, requires_grad=True)
    lm = head.landmarks(head.vertices(shape, expr, jaw))
    assert lm.shape == (468, 3)
    (lm[:, 2].sum() + lm[:, 0].sum()).backward()
    assert shape.grad.abs().sum() > 0 and expr.grad.abs().sum() > 0 and jaw.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    s, e = torch.randn(head.n_shape, generator=g), torch.randn(head.n_expr, generator=g)
    j = torch.tensor([0.2, 0.02, 0.0])
    with torch.no_grad():
        assert torch.allclose(head.landmark_points(s, e, j), head.landmarks(head.vertices(s, e, j)), atol=1e-6)


def test_deformation_matches_an_independent_numpy_model(data, head):
    """vertices = rest + Σ shape·basis + Σ expr·basis, then the jaw part rotated about the pivot
    (scipy's rotation, blended by the jaw weights); landmarks = barycentric points."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    s, e, j = rng.normal(size=head.n_shape), rng.normal(size=head.n_expr), np.array([0.3, -0.05, 0.02])
    v = data.vertices + np.einsum("k,kvc->vc", s, data.shape_basis) + np.einsum("k,kvc->vc", e, data.expr_basis)
    rotated = Rotation.from_rotvec(j).apply(v - data.jaw_pivot) + data.jaw_pivot
    v = v + data.jaw_weights[:, None] * (rotated - v)
    lm = np.einsum("lc,lcx->lx", data.lmk_bary[:468], v[data.faces[data.lmk_face_idx[:468]]])
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        got = head.vertices(t(s), t(e), t(j)).numpy()
        got_lm = head.landmarks(t(got)).numpy()
        fast = head.landmark_points(t(s), t(e), t(j)).numpy()
        batch = head.landmark_points_batch(t(s)[None], t(e)[None], t(j)[None]).numpy()[0]
    assert np.abs(v - data.vertices).max() > 0.005  # the coefficients move the head
    np.testing.assert_allclose(got, v, atol=2e-6)
    np.testing.assert_allclose(got_lm, lm, atol=2e-6)
    np.testing.assert_allclose(fast, lm, atol=2e-6)
    np.testing.assert_allclose(batch, lm, atol=1e-6)


def test_jaw_opens_the_mouth(head):
    z = torch.zeros
    with torch.no_grad():
        rest = head.all_landmarks(head.vertices(z(head.n_shape), z(head.n_expr), None))
        open_ = head.all_landmarks(head.vertices(z(head.n_shape), z(head.n_expr), torch.tensor([0.25, 0, 0])))
    gap_rest = rest[13, 2] - rest[14, 2]  # upper inner lip above lower inner lip
    gap_open = open_[13, 2] - open_[14, 2]
    assert gap_open > gap_rest + 0.01
    assert torch.allclose(open_[10], rest[10], atol=1e-6)  # the forehead does not move
    assert open_[152, 2] < rest[152, 2] - 0.015  # the chin drops


def test_cache_roundtrip_and_damaged_cache(tmp_path, monkeypatch, data):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(template, "generate", lambda: data)
    first = template.load_data()
    assert template.cache_path().is_file()
    monkeypatch.setattr(template, "generate", lambda: pytest.fail("cache not used"))
    _assert_same_data(template.load_data(), data)
    template.cache_path().write_bytes(b"not an npz")
    monkeypatch.setattr(template, "generate", lambda: data)
    _assert_same_data(template.load_data(), data)


def test_render_reads_as_a_head(data):
    front = render(data.vertices, data.faces, 0, 0, 160)
    side = render(data.vertices, data.faces, 90, 0, 160)
    back = render(data.vertices, data.faces, 180, 0, 160)
    for img in (front, side, back):
        mask = (img < 250).any(-1)
        assert 0.1 < mask.mean() < 0.6
    # seen from +X the face (−Y) is on the image's left: the nose sticks out further than the occiput
    cols = np.flatnonzero((side < 250).any(-1).any(0))
    assert 80 - cols.min() > cols.max() - 80 + 2
    m_front = (front < 250).any(-1)
    assert abs(m_front[:, :80].sum() - m_front[:, 80:].sum()) < 0.03 * m_front.sum()


def test_fixed_uv_layout(tmp_path, monkeypatch, data):
    """One atlas for the template's topology, cached by digest: no unwrap per fitted head."""
    from recon.uv import rasterize_uv

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    uvs, faces_uv = template.load_uv(data)
    assert faces_uv.shape == data.faces.shape and uvs.shape[1] == 2
    assert uvs.min() >= 0 and uvs.max() <= 1
    assert template.uv_cache_path(data).is_file()
    # no two faces share texels (charts do not overlap): every face owns its own texels
    fid, _ = rasterize_uv(uvs, faces_uv, 512)
    assert 0.35 < (fid >= 0).mean() < 0.95
    assert len(np.unique(fid[fid >= 0])) > 0.9 * len(data.faces)
    import recon.uv

    monkeypatch.setattr(recon.uv, "unwrap", lambda *a, **k: pytest.fail("the cached atlas was not used"))
    again = template.TemplateHead(data).uv_layout()
    np.testing.assert_array_equal(again[1], faces_uv)
    np.testing.assert_array_equal(again[0], uvs)
