"""``gen3dface dataset build``: posed renders or textured meshes → the training format (``format``).

Per source item (Gen3D-Face §4, data): read and check its views and cameras, choose the
input view, run the engine's own preprocess + prior stages on that view (the prior is
estimated, never ground truth), move every camera into the fitted prior's frame, and write
the item under a temporary name renamed into place. Items already complete are kept
(resume); an item that fails any check is skipped with its reason in the manifest and the
run goes on.

Sources:
* renders: ``<src>/<id>/transforms.json`` (nerfstudio, engine world: head at the origin)
  with its images;
* meshes: ``<src>/<id>.{glb,gltf,obj,ply}`` with a texture or vertex colours, rendered by
  ``render.render`` on the paper's 48-view layout (``engine/multiview/layouts.py``).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.context import RunContext
from engine.errors import BadInput
from recon.cameras import Camera, from_frame

from . import format as fmt

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply")


@dataclass(frozen=True)
class BuildConfig:
    """Options of ``dataset build``."""

    source: str = "auto"
    """renders (folders with transforms.json), meshes (GLB/OBJ/PLY files) or auto (both)."""
    input_view: str = "front"
    """The view the prior is fitted on: "front" (camera nearest the face direction, −Y) or an index."""
    crop_size: int = 256
    """Side of the preprocess crop (the model's input), pixels."""
    mesh_views: int = 48
    """Views rendered per mesh on the gen3dface layout (paper: 48)."""
    mesh_size: int = 256
    """Side of the rendered mesh views, pixels."""
    mesh_up: str = "y"
    """Up axis of mesh files: y (glTF; face toward +Z) or z (already the engine's world)."""
    mesh_extent: float = 0.3
    """Meshes are centred and scaled so that their largest extent is this, metres."""
    min_views: int = 2
    """Fewer views than this is a bad item."""
    prior_model: str = "auto"
    """Prior stage model: auto (FLAME when installed, else the template), flame, template."""
    limit: int = 0
    """Build at most this many new items (0: all)."""

    def __post_init__(self):
        if self.source not in ("auto", "renders", "meshes"):
            raise ValueError(f"source must be auto|renders|meshes, got {self.source!r}")
        if self.input_view != "front" and not self.input_view.isdigit():
            raise ValueError(f"input_view must be 'front' or an index, got {self.input_view!r}")
        if self.mesh_up not in ("y", "z"):
            raise ValueError(f"mesh_up must be y|z, got {self.mesh_up!r}")


@dataclass
class Source:
    """One source item: its id, where it comes from and how to read it."""

    id: str
    path: Path
    kind: str  # "renders" | "meshes"


def find_sources(src: Path, config: BuildConfig) -> list[Source]:
    """The items of ``src`` (sorted by id)."""
    out = []
    for p in sorted(Path(src).iterdir()):
        if config.source in ("auto", "renders") and p.is_dir() and (p / "transforms.json").exists():
            out.append(Source(p.name, p, "renders"))
        elif config.source in ("auto", "meshes") and p.is_file() and p.suffix.lower() in MESH_EXTENSIONS:
            out.append(Source(p.stem, p, "meshes"))
    return out


def read_renders(folder: Path, min_views: int) -> tuple[list[np.ndarray], list[Camera]]:
    """Views [N] RGBA uint8 (same square size) and their cameras; DatasetError naming the bad file."""
    path = folder / "transforms.json"
    meta = fmt._read_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or len(frames) < min_views:
        raise fmt.DatasetError(path, f"needs a 'frames' list of at least {min_views} views")
    views, cams = [], []
    for i, frame in enumerate(frames):
        try:
            cam = from_frame(meta, frame)
            rel = frame["file_path"]
        except (KeyError, TypeError, ValueError) as exc:
            raise fmt.DatasetError(path, f"frame {i}: bad camera ({exc})") from None
        img = fmt.read_rgba(folder / rel)
        if img.shape[:2] != (cam.h, cam.w):
            raise fmt.DatasetError(folder / rel, f"image is {img.shape[1]}x{img.shape[0]}, its camera says {cam.w}x{cam.h}")
        views.append(img)
        cams.append(cam)
    sizes = {v.shape[:2] for v in views}
    if len(sizes) > 1:
        raise fmt.DatasetError(path, f"views of mixed sizes ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))})")
    h, w = sizes.pop()
    if h != w:
        raise fmt.DatasetError(path, f"views must be square, got {w}x{h}")
    return views, cams


def _mesh_arrays(path: Path, config: BuildConfig) -> dict:
    """Vertices (engine world, centred, scaled), faces and colour source of a mesh file."""
    import trimesh

    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types for broken files
        raise fmt.DatasetError(path, f"not a readable mesh ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    mesh = loaded.dump(concatenate=True) if isinstance(loaded, trimesh.Scene) else loaded
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise fmt.DatasetError(path, "holds no triangles")
    v = np.asarray(mesh.vertices, np.float64)
    if config.mesh_up == "y":  # glTF / most OBJ: Y up, face toward +Z → Blender: Z up, face toward −Y
        v = v @ np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    lo, hi = v.min(0), v.max(0)
    v = (v - (lo + hi) / 2) * (config.mesh_extent / max(float((hi - lo).max()), 1e-9))
    out = {"vertices": v, "faces": np.asarray(mesh.faces, np.int64)}
    visual = mesh.visual
    image = getattr(getattr(visual, "material", None), "baseColorTexture", None) or getattr(getattr(visual, "material", None), "image", None)
    if getattr(visual, "kind", None) == "texture" and visual.uv is not None and image is not None:
        out.update(uvs=np.asarray(visual.uv, np.float32), faces_uv=out["faces"],
                   texture=np.asarray(image.convert("RGB")))
    else:
        colour = visual.to_color() if hasattr(visual, "to_color") else visual
        out["colours"] = np.asarray(colour.vertex_colors, np.float32)[:, :3] / 255.0
    return out


def render_mesh(path: Path, config: BuildConfig) -> tuple[list[np.ndarray], list[Camera]]:
    """A mesh file rendered at ``mesh_views`` views of the gen3dface layout."""
    from engine.multiview.layouts import get_layout

    from .render import LIGHTINGS, render

    arrays = _mesh_arrays(path, config)
    cams = get_layout("gen3dface", config.mesh_views).cameras(config.mesh_size)
    geo = {k: arrays[k] for k in ("colours", "uvs", "faces_uv", "texture") if k in arrays}
    views = [render(arrays["vertices"], arrays["faces"], c, lighting=LIGHTINGS["studio"], **geo) for c in cams]
    return views, cams


def choose_input(cameras: list[Camera], choice: str, where: Path) -> int:
    """Index of the input view: "front" = the camera centre nearest the face direction (−Y)."""
    if choice != "front":
        i = int(choice)
        if i >= len(cameras):
            raise fmt.DatasetError(where, f"input view {i} does not exist ({len(cameras)} views)")
        return i
    dirs = np.stack([c.center / max(np.linalg.norm(c.center), 1e-9) for c in cameras])
    return int(np.argmax(dirs @ np.array([0.0, -1.0, 0.0])))


def alignment(source: Camera, estimated: Camera) -> np.ndarray:
    """4×4 similarity (prior world from source world) that puts the source input camera onto the
    estimated one; its scale matches the cameras' distances to their origins (the head centre)."""
    s = np.linalg.norm(estimated.center) / max(np.linalg.norm(source.center), 1e-9)
    rot = estimated.c2w[:3, :3] @ source.c2w[:3, :3].T
    m = np.eye(4)
    m[:3, :3] = s * rot
    m[:3, 3] = estimated.center - s * rot @ source.center
    return m


def move_camera(cam: Camera, m: np.ndarray) -> Camera:
    """``cam`` moved by the similarity ``m`` (rotation and position; intrinsics unchanged)."""
    s = np.cbrt(np.linalg.det(m[:3, :3]))
    c2w = np.eye(4)
    c2w[:3, :3] = m[:3, :3] / s @ cam.c2w[:3, :3]
    c2w[:3, 3] = m[:3, :3] @ cam.center + m[:3, 3]
    return Camera(c2w, cam.fx, cam.fy, cam.cx, cam.cy, cam.w, cam.h)


def _fit_prior(photo: Path, work: Path, config: BuildConfig, ctx: RunContext):
    """The engine's own preprocess + prior on one view (what inference does with a photo)."""
    from engine import preprocess, prior

    pre = preprocess.run(photo, work, preprocess.PreprocessConfig(size=config.crop_size), ctx)
    return pre, prior.run(pre, work, prior.PriorConfig(model=config.prior_model), ctx)


def write_item(source: Source, views: list[np.ndarray], cams: list[Camera], root: Path, config: BuildConfig,
               ctx: RunContext) -> dict:
    """Fit the prior on the input view and write the item atomically; returns its record."""
    i_in = choose_input(cams, config.input_view, source.path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.id}.tmp-", dir=root))
    try:
        photo = tmp / "source_input.png"
        Image.fromarray(views[i_in], "RGBA").save(photo)
        pre, head = _fit_prior(photo, tmp, config, ctx)
        photo.unlink()
        for leftover in ("input/photo.png", "prior/head.glb"):
            (tmp / leftover).unlink(missing_ok=True)
        np.savez(tmp / "prior" / "mesh.npz", vertices=np.asarray(head.vertices, np.float32),
                 faces=np.asarray(head.faces, np.int32))
        m = alignment(cams[i_in], head.camera)
        moved = [move_camera(c, m) for c in cams]
        (tmp / "views").mkdir()
        paths = []
        for k, img in enumerate(views):
            rel = f"views/view_{k:03d}.png"
            Image.fromarray(img, "RGBA").save(tmp / rel, compress_level=1)
            paths.append(rel)
        from recon.cameras import to_transforms

        c = head.camera
        extra = {"input_view": i_in, "alignment": m.tolist(), "prior_model": head.model,
                 "input_frame": {"file_path": "input/crop.png", "transform_matrix": c.c2w.tolist(), "fl_x": c.fx,
                                 "fl_y": c.fy, "cx": c.cx, "cy": c.cy, "w": c.w, "h": c.h}}
        (tmp / "transforms.json").write_text(json.dumps(to_transforms(moved, paths, extra), indent=1))
        record = fmt.write_item_record(tmp, source.id, len(views), int(views[0].shape[0]), i_in, source.kind)
        final = root / source.id
        if final.exists():  # an incomplete leftover of an older run
            shutil.rmtree(final)
        tmp.rename(final)
        return record
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _existing(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and fmt.is_complete(p):
            out[p.name] = fmt._read_json(p / fmt.ITEM_FILE)
    return out


def build(src: Path, out: Path, config: BuildConfig, ctx: RunContext) -> dict:
    """Build (or resume) the dataset ``out`` from ``src``; returns the manifest."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise fmt.DatasetError(src, "source folder not found")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # a killed run's half-written item
        shutil.rmtree(stale, ignore_errors=True)
    items = _existing(out)
    sources = find_sources(src, config)
    if not sources:
        raise fmt.DatasetError(src, "no items (folders with transforms.json, or GLB/OBJ/PLY files)")
    skipped, new = [], 0
    settings = {"source_dir": str(src), **asdict(config)}
    for n, s in enumerate(sources):
        ctx.progress(n, len(sources), f"item {s.id}")
        if s.id in items:
            continue
        if config.limit and new >= config.limit:
            break
        try:
            views, cams = read_renders(s.path, config.min_views) if s.kind == "renders" else render_mesh(s.path, config)
            items[s.id] = write_item(s, views, cams, out, config, ctx)
            new += 1
        except (fmt.DatasetError, BadInput) as exc:  # a bad item; a missing model or cancel ends the run
            where = str(exc.path or s.path)
            skipped.append({"id": s.id, "source": str(s.path), "file": where, "reason": exc.reason})
            ctx.warn("item_skipped", f"{where}: {exc.reason}")
        fmt.write_manifest(out, items, skipped, settings)
    ctx.progress(len(sources), len(sources), "done")
    fmt.write_manifest(out, items, skipped, settings)
    return fmt.read_manifest(out)
