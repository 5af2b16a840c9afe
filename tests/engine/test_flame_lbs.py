"""The torch FLAME layer: Rodrigues, skinning, correctives, blendshapes, frame, landmarks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.prior import flame
from engine.prior.model import HeadModel
from tests.engine import flame_fixtures as ff

torch.set_num_threads(1)

#: FLAME (Y up, face toward +Z) → Blender world (Z up, face toward −Y): (x, y, z) → (x, −z, y).
FLAME_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
#: FLAME's joints: global, neck, jaw, left eye, right eye (the fixture's kintree has the same order).
JAW = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flame")
    arrays = ff.make_flame_arrays()
    pkl = ff.write_flame_chumpy(root / "FLAME" / "generic_model.pkl", arrays)
    emb = ff.write_embedding(root / "FLAME" / "mediapipe_landmark_embedding.npz", arrays)
    return arrays, pkl, emb, root / "cache"


@pytest.fixture(scope="module")
def model(files):
    _, pkl, emb, cache = files
    return flame.load_flame(pkl, emb, dtype=torch.float64, cache_root=cache)


def _model_from(arrays, emb_path, **kw):
    normalised = flame.validate_flame(arrays, "synthetic")
    emb = flame.load_embedding(emb_path)
    return flame.FlameModel(normalised, emb, dtype=torch.float64, **kw)


def test_rodrigues_matches_scipy():
    rng = np.random.default_rng(0)
    aa = np.concatenate([rng.normal(size=(20, 3)) * 1.5, rng.normal(size=(5, 3)) * 1e-6, np.zeros((1, 3))])
    ours = flame.rodrigues(torch.as_tensor(aa)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)


def test_rodrigues_gradient_at_zero():
    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    r = flame.rodrigues(aa)
    r[2, 1].backward()  # dR/dθx at identity: R ≈ I + [θ]×, so R[2,1] = θx
    assert torch.isfinite(aa.grad).all()
    np.testing.assert_allclose(aa.grad.numpy(), [1, 0, 0])


def test_skin_two_joints_by_hand():
    # Joint 0 at the origin, joint 1 at (0,1,0) (child of 0). Vertex A (0,2,0) follows joint 1,
    # vertex B (0,2,0) is half/half, vertex C (1,0,0) follows joint 0.
    v = torch.tensor([[[0.0, 2, 0], [0, 2, 0], [1, 0, 0]]], dtype=torch.float64)
    joints = torch.tensor([[[0.0, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    w = torch.tensor([[0.0, 1], [0.5, 0.5], [1, 0]], dtype=torch.float64)
    z90 = flame.rodrigues(torch.tensor([0, 0, np.pi / 2], dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64)

    child = flame.skin(v, joints, torch.stack([eye, z90])[None], [-1, 0], w)[0]
    # A: (0,1,0) about joint 1 rotated 90° about z → (−1,0,0) + (0,1,0) = (−1,1,0).
    # B: average of unmoved (0,2,0) and (−1,1,0) = (−0.5,1.5,0). C does not move.
    np.testing.assert_allclose(child.numpy(), [[-1, 1, 0], [-0.5, 1.5, 0], [1, 0, 0]], atol=1e-12)

    root = flame.skin(v, joints, torch.stack([z90, eye])[None], [-1, 0], w)[0]
    # Root rotation carries everything: (0,2,0) → (−2,0,0), (1,0,0) → (0,1,0).
    np.testing.assert_allclose(root.numpy(), [[-2, 0, 0], [-2, 0, 0], [0, 1, 0]], atol=1e-12)

    both = flame.skin(v, joints, torch.stack([z90, z90])[None], [-1, 0], w)[0]
    # Joint 1 moves to (−1,0,0); A's offset (0,1,0) turns 180° → (0,−1,0): A = (−1,−1,0).
    np.testing.assert_allclose(both[0].numpy(), [-1, -1, 0], atol=1e-12)


def test_rest_pose_is_template_in_world_frame(model, files):
    arrays = files[0]
    v = model.vertices(torch.zeros(300, dtype=torch.float64), torch.zeros(100, dtype=torch.float64))
    t = arrays["v_template"]
    centre = (t.min(0) + t.max(0)) / 2
    expected = np.stack([t[:, 0] - centre[0], -(t[:, 2] - centre[2]), t[:, 1] - centre[1]], 1)
    np.testing.assert_allclose(v.numpy(), expected, atol=1e-12)
    # Blender world: face toward −Y (FLAME +Z), top of the head toward +Z (FLAME +Y), centred.
    front = np.argmax(t[:, 2])
    top = np.argmax(t[:, 1])
    assert v[front, 1] == v[:, 1].min() and v[top, 2] == v[:, 2].max()
    np.testing.assert_allclose((v.max(0).values + v.min(0).values).numpy() / 2, 0, atol=1e-12)


def test_pose_correctives_zero_at_rest_and_active_when_posed(files):
    arrays, _, emb, _ = files
    no_pd = dict(arrays, posedirs=np.zeros_like(arrays["posedirs"]))
    with_pd, without_pd = _model_from(arrays, emb), _model_from(no_pd, emb)
    s, e = torch.randn(300, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    torch.testing.assert_close(with_pd.vertices(s, e), without_pd.vertices(s, e), rtol=0, atol=1e-14)
    jaw = torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64)
    assert (with_pd.vertices(s, e, jaw) - without_pd.vertices(s, e, jaw)).abs().max() > 1e-5


def test_blendshapes_are_linear(model, files):
    torch.manual_seed(0)
    z_s, z_e = torch.zeros(300, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)
    a, b = torch.randn(300, dtype=torch.float64), torch.randn(300, dtype=torch.float64)
    ea, eb = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    base = model.vertices(z_s, z_e)
    lhs = model.vertices(a + b, ea + eb) - base
    rhs = (model.vertices(a, ea) - base) + (model.vertices(b, eb) - base)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)
    # Shape 0 of the fixture is a uniform scale about the template mean: check it really moves.
    assert (model.vertices(torch.eye(300, dtype=torch.float64)[0], z_e) - base).abs().max() > 1e-3
    # At rest pose the offsets are the file's blendshapes, shapedirs @ [shape; expr], in the world frame.
    sd = files[0]["shapedirs"]
    expected = np.einsum("vck,k->vc", sd, np.r_[a.numpy(), ea.numpy()]) @ FLAME_TO_WORLD.T
    np.testing.assert_allclose((model.vertices(a, ea) - base).numpy(), expected, atol=1e-12)


def test_jaw_rotates_jaw_vertices_about_the_jaw_joint(files):
    arrays, _, emb, _ = files
    # One-hot skinning so the expected position is a plain rigid rotation about the jaw joint.
    hard = np.eye(5)[np.argmax(arrays["weights"], 1)]
    m = _model_from(dict(arrays, weights=hard, posedirs=np.zeros_like(arrays["posedirs"])), emb)
    z_s, z_e = torch.zeros(300, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)
    jaw_aa = np.array([0.3, 0.05, -0.02])
    rest = m.vertices(z_s, z_e).numpy()
    opened = m.vertices(z_s, z_e, torch.as_tensor(jaw_aa)).numpy()
    j_flame = (arrays["J_regressor"] @ arrays["v_template"])[JAW]
    centre = (arrays["v_template"].min(0) + arrays["v_template"].max(0)) / 2
    j_world = FLAME_TO_WORLD @ (j_flame - centre)
    is_jaw = hard[:, JAW] == 1
    assert 5 < is_jaw.sum() < len(hard) / 2
    expected = (rest[is_jaw] - j_world) @ Rotation.from_rotvec(jaw_aa).as_matrix().T + j_world
    np.testing.assert_allclose(opened[is_jaw], expected, atol=1e-12)
    np.testing.assert_allclose(opened[~is_jaw], rest[~is_jaw], atol=1e-12)
    # Positive rotation about world +X opens the mouth: the chin goes down.
    assert opened[is_jaw, 2].mean() < rest[is_jaw, 2].mean()


def test_batched_forward_and_gradients(model):
    torch.manual_seed(1)
    s = torch.randn(2, 300, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 100, dtype=torch.float64, requires_grad=True)
    pose = (0.1 * torch.randn(2, 5, 3, dtype=torch.float64)).requires_grad_()
    out = model(s, e, pose)
    assert out.shape == (2, model.v_template.shape[0], 3)
    for i in range(2):
        torch.testing.assert_close(out[i], model(s[i], e[i], pose[i]), rtol=0, atol=1e-12)
    model.landmarks(out).square().sum().backward()
    for t in (s, e, pose):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    jaw = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # gradient exists at rest
    model.landmarks(model.vertices(s[0].detach(), e[0].detach(), jaw))[:, 2].sum().backward()
    assert jaw.grad.abs().sum() > 0


def test_landmarks_are_barycentric(model, files):
    arrays, _, emb_path, _ = files
    v = model.vertices(torch.randn(300, dtype=torch.float64), torch.randn(100, dtype=torch.float64))
    lm = model.landmarks(v)
    emb = np.load(emb_path)  # the file's own triangles and barycentrics, not the loader's copy
    tri = v.numpy()[arrays["f"].astype(np.int64)[emb["lmk_face_idx"]]]  # [L, 3, 3]
    np.testing.assert_allclose(lm.numpy(), np.einsum("lc,lck->lk", emb["lmk_b_coords"], tri), atol=1e-12)
    np.testing.assert_array_equal(model.landmark_ids, emb["landmark_indices"])
    assert lm.shape == (len(model.landmark_ids), 3)
    assert model.landmarks(torch.stack([v, v])).shape == (2, len(model.landmark_ids), 3)


def test_head_model_interface_and_options(files, model):
    arrays, pkl, emb, cache = files
    assert isinstance(model, HeadModel)
    assert model.name == "flame" and model.faces.dtype == np.int64 and model.faces.shape[1] == 3
    assert model.n_shape == 300 and model.n_expr == 100 and model.landmark_ids.dtype == np.int64
    small = flame.load_flame(pkl, emb, dtype=torch.float32, n_shape=10, n_expr=5, cache_root=cache)
    v = small.vertices(torch.zeros(10), torch.zeros(5), torch.zeros(3))
    assert v.dtype == torch.float32 and small.n_shape == 10 and small.n_expr == 5
    # The first components of a truncated model agree with the full one.
    s, e = torch.zeros(300, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)
    s[:10], e[:5] = torch.arange(10) / 10, -torch.arange(5) / 5
    torch.testing.assert_close(small.vertices(s[:10].float(), e[:5].float()), model.vertices(s, e).float(),
                               rtol=0, atol=1e-6)
    big = flame.load_flame(pkl, emb, n_shape=500, n_expr=500, cache_root=cache)
    assert (big.n_shape, big.n_expr) == (300, 100)  # clamped to what the file has


def test_zero_expression_components(files):
    _, pkl, emb, cache = files
    m = flame.load_flame(pkl, emb, n_shape=4, n_expr=0, cache_root=cache)
    v = m.vertices(torch.ones(4), torch.zeros(0), torch.zeros(3))
    vb = m.vertices(torch.ones(2, 4), torch.zeros(2, 0))
    assert v.shape == (m.v_template.shape[0], 3) and vb.shape == (2,) + v.shape
    torch.testing.assert_close(vb[1], v)
