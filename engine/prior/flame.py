"""FLAME head model from the user's own FLAME file (paper §3.1: the prior is a FLAME head).

FLAME (Li et al. 2017) is a linear-blend-skinned head: a template, 300 shape and 100
expression blendshapes, pose correctives driven by the rotations of 4 joints, and 5 joints
(root/global, neck, jaw, left eye, right eye) in a kinematic tree. Users download it
themselves (FLAME 2020 ``generic_model.pkl``, FLAME 2023, or FLAME 2023 Open under
CC-BY-4.0) together with the mediapipe landmark embedding, and put them under
``<models_dir>/FLAME/``.

The pickles are read once with a restricted unpickler (``_safe_pickle``), validated and
converted to ``<cache_dir>/flame/<sha256 prefix>.npz``; later runs load the ``.npz``.

Model space (``FlameModel``) is the Blender world of docs/architecture.md: FLAME's native frame is
Y up, face toward +Z, so ``(x, y, z)_flame ↦ (x, −z, y)``, and the centre of the
template's bounding box (a fixed point, independent of the coefficients) is moved to the
origin.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from engine.errors import ModelMissing
from engine.paths import cache_dir
from engine.prior._safe_pickle import RefusedGlobal, UnsupportedObject, safe_load, to_array
from engine.prior.model import MEDIAPIPE_POINTS, LandmarkEmbedding

log = logging.getLogger(__name__)

FLAME_URL = "https://flame.is.tue.mpg.de"
#: Joints: 0 global (root), 1 neck, 2 jaw, 3 left eye, 4 right eye.
N_JOINTS = 5
JAW = 2
#: Columns of ``shapedirs`` before the expression blendshapes start (FLAME 2017–2023).
SHAPE_BASIS = 300
#: Bump when the cached ``.npz`` layout changes (part of the cache key).
CACHE_FORMAT = "flame-npz-1"

#: FLAME files looked for under ``<models_dir>``, in order of preference (glob patterns).
#: FLAME 2023 Open first: it is the only one under a permissive licence (CC-BY-4.0).
PKL_PATTERNS = (
    "FLAME/flame2023_Open.pkl",
    "FLAME/FLAME2023_Open/*.pkl",
    "FLAME/flame2023.pkl",
    "FLAME/FLAME2023/flame2023.pkl",
    "FLAME/generic_model.pkl",
    "FLAME/FLAME2020/generic_model.pkl",
    "FLAME/flame2023_no_jaw.pkl",
    "FLAME/FLAME2023/flame2023_no_jaw.pkl",
)
EMBEDDING_PATTERNS = (
    "FLAME/mediapipe_landmark_embedding.npz",
    "FLAME/*/mediapipe_landmark_embedding.npz",
)

# (x, y, z)_flame ↦ (x, −z, y)_blender: a rotation of +90° about X (det = +1).
_FLAME_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


# ----------------------------------------------------------------------------- discovery


def flame_files(models_dir: Path) -> tuple[Path | None, Path | None]:
    """(FLAME pickle, mediapipe embedding) found under ``models_dir``, each or None.

    Names tried, in order: see ``PKL_PATTERNS`` and ``EMBEDDING_PATTERNS``.
    """
    models_dir = Path(models_dir)

    def first(patterns: tuple[str, ...]) -> Path | None:
        for pattern in patterns:
            hits = sorted(p for p in models_dir.glob(pattern) if p.is_file())
            if hits:
                return hits[0]
        return None

    return first(PKL_PATTERNS), first(EMBEDDING_PATTERNS)


def find_flame(models_dir: Path) -> tuple[Path, Path] | None:
    """Both FLAME files under ``models_dir``, or None if either is missing (logged)."""
    pkl, emb = flame_files(models_dir)
    if pkl is None or emb is None:
        missing = "FLAME pickle" if pkl is None else "mediapipe_landmark_embedding.npz"
        log.info("FLAME not used: no %s under %s/FLAME", missing, models_dir)
        return None
    return pkl, emb


# ------------------------------------------------------------------- reading and checking


def read_flame(pkl: Path, cache_root: Path | None = None) -> dict[str, np.ndarray]:
    """The validated FLAME arrays of ``pkl``, converted once to a cached ``.npz``.

    Returns v_template [V,3] f8, f [F,3] i8, shapedirs [V,3,K] f8, posedirs [V,3,36] f8,
    J_regressor [5,V] f8 (dense), weights [V,5] f8, kintree_table [2,5] i8 (root parent −1).
    The cache file is ``cache_root/<sha256(file) prefix>.npz`` (default
    ``cache_dir()/flame``), so an edited or replaced pickle is converted again.
    Raises ``ModelMissing`` (exit 3) naming ``pkl`` when it is missing, refused or malformed.
    """
    pkl = Path(pkl)
    if not pkl.is_file():
        raise ModelMissing(pkl, f"FLAME model file not found; download FLAME from {FLAME_URL}")
    digest = _file_digest(pkl)
    cached = Path(cache_root or cache_dir() / "flame") / f"{digest[:24]}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return validate_flame({k: npz[k] for k in npz.files}, pkl)
        except (OSError, ValueError, zipfile.BadZipFile, ModelMissing) as exc:
            log.warning("ignoring unreadable FLAME cache %s (%s); converting again", cached, exc)
    arrays = validate_flame(_unpickle(pkl), pkl)
    _write_cache(cached, arrays)
    return arrays


def _file_digest(path: Path) -> str:
    h = hashlib.sha256(CACHE_FORMAT.encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpickle(pkl: Path) -> dict:
    """The pickle's top-level dict, read with the restricted unpickler."""
    log.info("converting FLAME model %s (restricted unpickler)", pkl)
    try:
        with open(pkl, "rb") as fh:
            raw = safe_load(fh)
    except RefusedGlobal as exc:
        raise ModelMissing(
            pkl, f"{exc} — not loaded: this is not a plain FLAME file; download it again from {FLAME_URL}"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeError, OverflowError, MemoryError) as exc:
        raise ModelMissing(pkl, f"cannot read the FLAME pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ModelMissing(pkl, f"not a FLAME model: the pickle holds a {type(raw).__name__}, not a dict")
    return raw


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write (temp + rename) so a killed run never leaves a half-written cache."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        log.info("cached FLAME arrays at %s", path)
    except OSError as exc:
        log.warning("could not cache FLAME arrays at %s (%s); will convert again next run", path, exc)
        tmp.unlink(missing_ok=True)


_REQUIRED = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


def validate_flame(raw: dict, path: Path) -> dict[str, np.ndarray]:
    """Check keys, shapes, dtypes and index ranges; return normalised arrays (see read_flame)."""
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        found = ", ".join(sorted(map(str, raw))[:10]) or "nothing"
        raise ModelMissing(path, f"not a FLAME model: missing {', '.join(missing)} (found {found}); "
                                 f"download FLAME from {FLAME_URL}")
    try:
        a = {k: to_array(raw[k], k) for k in _REQUIRED}
    except UnsupportedObject as exc:
        raise ModelMissing(path, f"not a FLAME model: {exc}") from None

    def bad(msg: str) -> ModelMissing:
        return ModelMissing(path, f"not a FLAME model: {msg}; download FLAME from {FLAME_URL}")

    v = a["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise bad(f"v_template has shape {v.shape}, expected (V, 3)")
    n_v = v.shape[0]
    pd = a["posedirs"]
    if pd.shape == (n_v * 3, (N_JOINTS - 1) * 9):  # some exports flatten the vertex axis
        a["posedirs"] = pd = pd.reshape(n_v, 3, -1)
    expected = {
        "f": (None, 3), "shapedirs": (n_v, 3, None), "posedirs": (n_v, 3, (N_JOINTS - 1) * 9),
        "J_regressor": (N_JOINTS, n_v), "weights": (n_v, N_JOINTS), "kintree_table": (2, N_JOINTS),
    }
    for key, shape in expected.items():
        got = a[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise bad(f"{key} has shape {got}, expected {want} for V={n_v}")
    for key in ("f", "kintree_table"):
        if a[key].dtype.kind not in "iu":
            raise bad(f"{key} has dtype {a[key].dtype}, expected integers")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.isfinite(a[key]).all():
            raise bad(f"{key} contains NaN or infinity")
    f = a["f"].astype(np.int64)
    if f.shape[0] == 0 or f.min() < 0 or f.max() >= n_v:
        raise bad(f"f indexes vertices outside 0..{n_v - 1}")
    if a["shapedirs"].shape[2] == 0:
        raise bad("shapedirs has no blendshapes")
    kin = a["kintree_table"].astype(np.int64)
    kin[0, 0] = -1  # the root's parent is stored as 2**32 − 1 in FLAME files
    if any(not 0 <= kin[0, j] < j for j in range(1, N_JOINTS)):
        raise bad(f"kintree_table parents {kin[0].tolist()} are not a tree rooted at joint 0")
    floats = {k: a[k].astype(np.float64) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights")}
    return {**floats, "f": f, "kintree_table": kin}


def load_embedding(path: Path, n_faces: int | None = None) -> LandmarkEmbedding:
    """The mediapipe landmark embedding (``mediapipe_landmark_embedding.npz``).

    Keys: ``lmk_face_idx`` [L] (triangles of FLAME), ``lmk_b_coords`` [L,3] (barycentric),
    ``landmark_indices`` [L] (mediapipe points, < 478); L = 105 in the released file.
    Raises ``ModelMissing`` naming ``path`` when missing or malformed.
    """
    path = Path(path)
    where = f"get mediapipe_landmark_embedding.npz from {FLAME_URL} and put it beside the FLAME model"
    if not path.is_file():
        raise ModelMissing(path, f"mediapipe landmark embedding not found; {where}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile) as exc:
        raise ModelMissing(path, f"cannot read the landmark embedding ({exc}); {where}") from None

    def bad(msg: str) -> ModelMissing:
        return ModelMissing(path, f"not a mediapipe landmark embedding: {msg}; {where}")

    missing = [k for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices") if k not in data]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    face_idx, bary, mp_ids = (np.asarray(data[k]) for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices"))
    face_idx, mp_ids = face_idx.reshape(-1), mp_ids.reshape(-1)
    n = face_idx.shape[0]
    if n == 0 or bary.shape != (n, 3) or mp_ids.shape != (n,):
        raise bad(f"shapes lmk_face_idx {face_idx.shape}, lmk_b_coords {bary.shape}, "
                  f"landmark_indices {mp_ids.shape} disagree")
    if face_idx.dtype.kind not in "iu" or mp_ids.dtype.kind not in "iu" or bary.dtype.kind != "f":
        raise bad("wrong dtypes (expected integer indices and float barycentric coordinates)")
    if face_idx.min() < 0 or (n_faces is not None and face_idx.max() >= n_faces):
        raise bad(f"lmk_face_idx outside 0..{n_faces}")
    if mp_ids.min() < 0 or mp_ids.max() >= MEDIAPIPE_POINTS:
        raise bad(f"landmark_indices outside 0..{MEDIAPIPE_POINTS - 1}")
    if not np.isfinite(bary).all() or np.abs(bary.sum(1) - 1).max() > 1e-2:
        raise bad("lmk_b_coords rows are not barycentric (must sum to 1)")
    return LandmarkEmbedding(face_idx.astype(np.int64), bary.astype(np.float64), mp_ids.astype(np.int64))


# ------------------------------------------------------------------------ the torch layer


def rodrigues(aa: Tensor) -> Tensor:
    """Rotation matrices from axis-angle vectors (smooth at 0: Taylor terms near the origin).

    aa: Tensor  # [..., 3], axis × angle in radians
    returns     # [..., 3, 3]
    """
    theta2 = (aa * aa).sum(-1, keepdim=True).unsqueeze(-1)  # [..., 1, 1]
    small = theta2 < 1e-8
    # where() on a safe θ keeps gradients finite at θ = 0 (jaw and pose start at rest).
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a * k + b * (k @ k)


def skin(v_posed: Tensor, joints: Tensor, rot: Tensor, parents: list[int], weights: Tensor) -> Tensor:
    """Linear blend skinning over a kinematic tree (joint j rotates about its rest position).

    v_posed: Tensor  # [B, V, 3] rest-pose vertices (after blendshapes and pose correctives)
    joints: Tensor   # [B, J, 3] rest joint positions
    rot: Tensor      # [B, J, 3, 3] local rotation of each joint
    parents          # [J] parent index, parents[0] = −1, parents[j] < j
    weights: Tensor  # [V, J] skinning weights (rows sum to 1)
    returns          # [B, V, 3]
    """
    rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], dim=1)  # [B, J, 3]
    bottom = torch.zeros_like(rel[..., :1, None].expand(*rel.shape[:2], 1, 4)).clone()
    bottom[..., 0, 3] = 1
    local = torch.cat([torch.cat([rot, rel.unsqueeze(-1)], -1), bottom], -2)  # [B, J, 4, 4]
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, dim=1)  # [B, J, 4, 4], rest → posed for points in joint frames
    # Make each transform act on rest-pose points: subtract the rotated rest joint position.
    shift = world[..., :3, 3] - (world[..., :3, :3] @ joints.unsqueeze(-1)).squeeze(-1)
    n_b, n_j = rot.shape[:2]
    # Blend the 3×4 transforms with one matmul and apply them elementwise: V tiny batched
    # 3×3 products are the slow path on CPU.
    blend = torch.cat([world[..., :3, :3].reshape(n_b, n_j, 9), shift], -1)  # [B, J, 12]
    per_v = (weights @ blend).view(n_b, -1, 4, 3)  # [B, V, 4, 3]: 3 matrix rows + translation
    r, t = per_v[:, :, :3], per_v[:, :, 3]
    return (r * v_posed.unsqueeze(-2)).sum(-1) + t


class FlameModel(nn.Module):
    """FLAME as a differentiable torch layer implementing ``HeadModel`` (model space = world).

    Coefficients: ``shape`` [n_shape] (first n_shape of FLAME's 300 identity components),
    ``expr`` [n_expr] (first n_expr of the 100 expression components); either may carry a
    leading batch dimension [B, n]. Pose axis-angles are given in model-space axes.
    Centre: ``center`` = bounding-box centre of FLAME's template (FLAME frame), subtracted
    before the axis change, so the rest head sits about the origin for every coefficient.
    """

    name = "flame"

    def __init__(self, arrays: dict[str, np.ndarray], embedding: LandmarkEmbedding, n_shape: int = 300,
                 n_expr: int = 100, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        sd = arrays["shapedirs"]  # [V, 3, K]
        n_v, k = sd.shape[0], sd.shape[2]
        avail_shape, avail_expr = min(k, SHAPE_BASIS), max(k - SHAPE_BASIS, 0)
        if n_shape > avail_shape or n_expr > avail_expr:
            log.info("FLAME file has %d shape / %d expression components; using %d / %d",
                     avail_shape, avail_expr, min(n_shape, avail_shape), min(n_expr, avail_expr))
        self.n_shape, self.n_expr = min(n_shape, avail_shape), min(n_expr, avail_expr)
        basis = np.concatenate([sd[:, :, : self.n_shape], sd[:, :, SHAPE_BASIS: SHAPE_BASIS + self.n_expr]], 2)
        self.faces = arrays["f"].astype(np.int64)
        self.embedding = embedding
        self.landmark_ids = embedding.mp_ids
        if embedding.face_idx.max() >= len(self.faces):
            raise ValueError("landmark embedding refers to triangles this FLAME mesh does not have")
        self.parents = [int(p) for p in arrays["kintree_table"][0]]
        v_t = arrays["v_template"]
        kw = dict(device=device, dtype=dtype)
        self.register_buffer("v_template", torch.as_tensor(v_t, **kw))  # [V, 3]
        # Stored [components, 3V] so the coefficient products are contiguous row-major mm.
        self.register_buffer("shapedirs", torch.as_tensor(basis.reshape(n_v * 3, -1).T.copy(), **kw))  # [S+E, 3V]
        self.register_buffer("posedirs", torch.as_tensor(arrays["posedirs"].reshape(n_v * 3, -1).T.copy(), **kw))
        self.register_buffer("J_regressor", torch.as_tensor(arrays["J_regressor"], **kw))  # [5, V]
        self.register_buffer("lbs_weights", torch.as_tensor(arrays["weights"], **kw))  # [V, 5]
        self.register_buffer("center", torch.as_tensor((v_t.min(0) + v_t.max(0)) / 2, **kw))  # [3]
        self.register_buffer("to_world", torch.as_tensor(_FLAME_TO_WORLD, **kw))  # [3, 3]
        self.register_buffer("faces_t", torch.as_tensor(self.faces, device=device))  # [F, 3]

    def forward(self, shape: Tensor, expr: Tensor, pose: Tensor | None = None) -> Tensor:
        """Posed vertices in model space.

        shape: Tensor  # [B, n_shape] or [n_shape]
        expr: Tensor   # [B, n_expr] or [n_expr]
        pose: Tensor   # [B, 5, 3] or [5, 3] axis-angle (global, neck, jaw, eye L, eye R) in
                       # model axes, rotating about each joint; None = rest
        returns        # [B, V, 3] or [V, 3]
        """
        batched = shape.dim() == 2
        n_b = shape.shape[0] if batched else 1
        shape, expr = shape.reshape(n_b, self.n_shape), expr.reshape(n_b, self.n_expr)
        if pose is None:
            pose = self.v_template.new_zeros(n_b, N_JOINTS, 3)
        pose = pose.reshape(-1, N_JOINTS, 3).expand(n_b, -1, -1)
        # Axis-angles are vectors: model axes → FLAME axes is the transpose of to_world.
        rot = rodrigues(pose @ self.to_world)  # [B, 5, 3, 3] in the FLAME frame
        coeffs = torch.cat([shape, expr], dim=1)  # [B, S+E]
        v_shaped = self.v_template + (coeffs @ self.shapedirs).view(n_b, -1, 3)  # [B, V, 3]
        joints = self.J_regressor @ v_shaped  # [B, 5, 3]
        # Pose correctives are linear in the entries of (R − I) of the non-root joints.
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feat = (rot[:, 1:] - eye).reshape(n_b, -1)  # [B, 36]
        v_posed = v_shaped + (feat @ self.posedirs).view(n_b, -1, 3)
        verts = skin(v_posed, joints, rot, self.parents, self.lbs_weights)  # [B, V, 3]
        out = (verts - self.center) @ self.to_world.T
        return out if batched else out[0]

    def vertices(self, shape: Tensor, expr: Tensor, jaw: Tensor | None = None) -> Tensor:
        """``HeadModel.vertices``: rest head with an optional jaw rotation (model axes).

        shape: [n_shape], expr: [n_expr], jaw: [3] or None → [V, 3] (batched [B, ·] → [B, V, 3])
        """
        if jaw is None:
            return self.forward(shape, expr)
        n_b = shape.shape[0] if shape.dim() == 2 else 1
        pose = self.v_template.new_zeros(n_b, N_JOINTS, 3)
        pose = torch.cat([pose[:, :JAW], jaw.reshape(-1, 1, 3).expand(n_b, 1, 3), pose[:, JAW + 1:]], 1)
        return self.forward(shape, expr, pose)

    def landmarks(self, verts: Tensor) -> Tensor:
        """``HeadModel.landmarks``: verts [..., V, 3] → [..., L, 3] (barycentric embedding)."""
        return self.embedding.points(verts, self.faces_t)


def load_flame(pkl: Path, embedding: Path, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, n_shape: int = 300, n_expr: int = 100,
               cache_root: Path | None = None) -> FlameModel:
    """Read (or reuse the cached conversion of) ``pkl`` and ``embedding`` → ``FlameModel``.

    Raises ``ModelMissing`` (exit 3) naming the offending file.
    """
    arrays = read_flame(pkl, cache_root)
    emb = load_embedding(embedding, n_faces=len(arrays["f"]))
    model = FlameModel(arrays, emb, n_shape, n_expr, device, dtype)
    log.info("FLAME %s: %d vertices, %d shape + %d expression components, %d landmarks",
             Path(pkl).name, len(arrays["v_template"]), model.n_shape, model.n_expr, len(emb.mp_ids))
    return model
