"""The embedded multi-view backend: the fitted head textured from the photo (CPU, no downloads).

Where the diffusion backend generates 360° views of the head (Gen3D-Face §3.2), this one
paints the prior mesh (§3.1's fitted head) with the photo and renders it:

1. UV atlas: the prior's own UVs, or an xatlas unwrap;
2. every texel's surface point is looked up in the photo through the input camera, with a
   z-buffer visibility test, cos^p view-angle weights and the matte as the mask
   (``recon.bake.point_projector``, the bake's occlusion-tested projection);
3. the side the photo does not see is read at the mirror point across the sagittal plane
   x = 0 (faces are nearly symmetric), where that point was seen;
4. the rest gets hair (on the scalp behind the hairline, with soft variation) and skin
   (face, ears, neck) colours estimated from the photo, plus a smooth correction on the
   mesh that meets the projected colours (``_fill``), blended by the projection weight, so
   no seam shows; grazing texels, non-skin colours on the ears, clothing below the jaw
   (out of the matte) and the downward-facing underside of the chin take no photo; the
   hair colour is the median (Lab) of the projected hair texels the fill meets;
   The photo's shading is taken out first and the skin is estimated per region, face and
   neck (``_skin``); further photos of the person (``extras``) are aligned to the input
   view photometrically (``_align``), de-shaded onto its albedo and fused by view angle
   with matched exposure (``_fuse``);
5. N views are rendered around the head (layouts) with a soft Lambert shading and
   anti-aliased silhouettes (``_shade``), written with ``write_views``; the textured mesh
   goes to ``mesh/head.glb``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engine.context import RunContext
from engine.errors import BadInput
from engine.paths import cache_dir
from recon.cameras import Camera
from recon.export import write_glb
from recon.raster import rasterize, vertex_normals
from recon.bake import point_projector
from recon.texture import sample_bilinear, texel_geometry, to_float
from recon.uv import dilate, rasterize_uv, unwrap

from . import _align, _fill, _fuse, _skin
from ._shade import render_rgba
from .layouts import get_layout
from .views import write_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectionConfig:
    """How the projection backend textures and renders the prior head."""

    n_views: int = 16
    """Number of output views."""
    size: int = 512
    """Side of the output views in pixels (the working resolution)."""
    texture_size: int = 1024
    """Side of the UV texture in texels."""
    layout: str = "gen3dface"
    """View layout (``engine.multiview.layouts``): gen3dface (360°, ±40° elevation), syncdreamer, morphable."""
    angle_power: float = 2.0
    """p in the projection weight cos^p(normal, direction to the camera); higher trusts frontal texels more."""
    min_cos: float = 0.2
    """Surface seen more obliquely than this cosine takes nothing from the photo: grazing
    texels smear the photo and pick up what lies beside the head (dark smudges behind the ears)."""
    cos_ramp: float = 0.25
    """The photo's weight ramps in smoothly over this much cosine above ``min_cos``."""
    border_px: float = 6.0
    """The weight ramps up over this many crop pixels inside the matte's border (edges mix in background)."""
    full_weight: float = 0.3
    """Projection weight at which the photo fully replaces the fill (smaller weights blend)."""
    mirror: bool = True
    """Fill the unseen side from the mirror point across the sagittal plane x = 0."""
    mirror_strength: float = 0.8
    """Factor on the mirrored weight: the true side wins where both are seen."""
    fill_decay: float = 0.03
    """Distance (metres) over which the photo's colours fade into the hair/skin fill on the mesh."""
    mirror_eps: float = 0.01
    """Visibility tolerance (metres) of mirrored points; a fitted head is only nearly symmetric."""
    eps: float = 0.002
    """Visibility tolerance (metres) of the direct projection."""
    ambient: float = 0.6
    """Ambient share of the view shading (1 = unlit albedo)."""
    supersample: int = 4
    """Samples per pixel side on the views' silhouettes (anti-aliased alpha; 1 = hard edges)."""
    unwrap_padding: int = 4
    """Texels between UV charts (xatlas padding at ``texture_size``)."""
    deshade: bool = True
    """Take the photo's shading out of the crop (a light fitted to the skin on the fitted head's
    normals, ``_skin``) and estimate the skin per region (face, neck) from the de-shaded crop."""
    align: bool = True
    """Refine each further photo's camera photometrically against the input view (``_align``)."""
    cache_uv: bool = True
    """Reuse the xatlas atlas of a mesh topology (keyed by its faces) from the cache folder:
    a fitted head keeps its template's topology, and unwrapping takes seconds."""

    def __post_init__(self) -> None:
        if self.n_views < 1 or self.size < 16 or self.texture_size < 16 or self.supersample < 1:
            raise ValueError("n_views ≥ 1, size ≥ 16, texture_size ≥ 16 and supersample ≥ 1 are required")
        if not 0 <= self.ambient <= 1:
            raise ValueError("ambient must be in [0, 1]")
        get_layout(self.layout, 1)  # unknown layout → ValueError now, not after the texture

    @classmethod
    def from_dict(cls, values: dict) -> "ProjectionConfig":
        """Build from a dict; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown projection settings: {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass(frozen=True)
class ProjectionResult:
    """What ``run`` wrote and the texture it made.

    mesh_path: mesh/head.glb; transforms_path: transforms.json; texture: uint8 [T, T, 3];
    colours: {"skin": [3], "hair": [3], "hair_state": "seen" | "bald" | "unknown"}, colours
    float in [0, 1] estimated from the photo; seen: float32 [T, T] the photo's weight per
    texel (0: fill only, ≥ ``full_weight``: photo only; 0 outside the charts).
    """

    mesh_path: Path
    transforms_path: Path
    texture: np.ndarray
    colours: dict
    seen: np.ndarray | None = None


def run(
    crop_rgba: np.ndarray,
    prior,
    run_dir: Path,
    config: ProjectionConfig,
    ctx: RunContext,
    landmarks: np.ndarray | None = None,
    extras=(),
) -> ProjectionResult:
    """Texture the prior head from the crop and render the views; see the module docstring.

    crop_rgba: uint8 [S, S, 4] (straight alpha = the matte).
    prior: has ``vertices`` [V, 3], ``faces`` [F, 3], ``camera`` (the input camera, Camera) and
        optionally ``uvs`` [V', 2] + ``faces_uv`` [F, 3] and ``landmarks_crop`` [478, 2|3].
    landmarks: mediapipe landmarks [478, 2|3] in crop pixels, for the skin and hair colours;
        None: ``prior.landmarks_crop``, else the "crop" points of ``run_dir/input/landmarks.json``
        (written by preprocess), else colours from the mesh's frontal points.
    extras: further photos of the person (``engine.multiphoto.ExtraView``: crop, camera on
        this head, landmarks), fused into the texture by view angle with matched exposure.
    """
    run_dir = Path(run_dir)
    total = 6
    # 1. Inputs and the UV atlas.
    ctx.progress(0, total, "unwrapping the head")
    crop, alpha, camera = _check_inputs(crop_rgba, prior, run_dir)
    v = np.asarray(prior.vertices, dtype=np.float64)
    faces = np.asarray(prior.faces, dtype=np.int64)
    vmap, faces_split, uvs = _atlas(v, faces, prior, config)
    normals = vertex_normals(v, faces)
    # 2.–4. Photo where seen, hair/skin fill elsewhere.
    lm = _landmarks(landmarks, prior, run_dir)
    tex = _texture(crop, alpha, camera, v, faces, normals, uvs, faces_split, lm, config, ctx, extras)
    cols, texture8 = tex.colours, tex.texture
    skin, hair = cols.skin, cols.hair
    # 5. Views around the head.
    ctx.progress(3, total, "rendering views")
    layout = get_layout(config.layout, config.n_views)
    cameras = layout.cameras(config.size)
    vs, ns = v[vmap], normals[vmap]
    closed = _is_closed(faces)
    images = []
    for cam in cameras:
        ctx.check_cancelled()
        images.append(render_rgba(vs, faces_split, uvs, ns, texture8, cam, ambient=config.ambient,
                                  ss=config.supersample, closed=closed))
    ctx.progress(4, total, "writing views")
    extra = {"backend": "projection", "layout": layout.name,
             "azimuths": list(layout.azimuths), "elevations": list(layout.elevations)}
    transforms = write_views(run_dir, images, cameras, input_camera=camera, extra=extra)
    # 6. The textured head.
    ctx.progress(5, total, "writing mesh/head.glb")
    mesh_path = write_glb(run_dir / "mesh" / "head.glb", vs, faces_split, uvs, texture8, ns)
    ctx.progress(total, total, "done")
    colours = {"skin": skin.tolist(), "hair": hair.tolist(), "hair_state": cols.hair_state,
               "neck": (tex.tone.neck if tex.tone is not None else skin).tolist()}
    log.info("projection: skin %s hair %s, %d views", np.round(skin, 3), np.round(hair, 3), len(images))
    return ProjectionResult(mesh_path, transforms, texture8, colours, tex.seen)


@dataclass(frozen=True)
class _Texture:
    """texture: uint8 [T, T, 3]; seen: float32 [T, T] photo weight; colours: ``_fill.Colours``;
    tone: the de-shaded skin per region (``_skin.SkinTone``) or None."""

    texture: np.ndarray
    seen: np.ndarray
    colours: "_fill.Colours"
    tone: "_skin.SkinTone | None" = None


def _texture(crop, alpha, camera, v, faces, normals, uvs, faces_split, lm, config: ProjectionConfig,
             ctx: RunContext, extras=()) -> _Texture:
    """Steps 2–4 of the module docstring: project, estimate the colours, fill, blend."""
    ctx.progress(1, 6, "projecting the photo")
    geo = texel_geometry(v, faces, uvs, faces_split, config.texture_size,
                         uv_raster=_uv_raster(uvs, faces_split, config) if config.cache_uv else None)
    frags = rasterize(v, faces, camera)
    raw = crop
    crop, tone = _deshade(crop, alpha, lm, v, faces, normals, camera, frags, config)
    ver_c0, ver_w0 = _project(v, normals, _projector(crop, alpha, camera, v, faces, config), config)
    frontal = ver_c0[_frontal(ver_w0, normals)]
    cols = _fill.estimate_colours(crop, alpha, lm, frontal, skin=None if tone is None else tone.face)
    if cols.hair_state == "unknown":
        ctx.warn("hair_colour_default", "no hair visible above the forehead; using a default hair colour")
    # Clothing below the jaw is not the neck's colour: out of the matte, so neither the direct
    # nor the mirrored projection paints the neck with a collar (its soft border blends).
    cloth = _fill.clothing_mask(crop, alpha, lm, cols.skin)
    matte = alpha & ~cloth
    into_matte = _projector(crop, matte, camera, v, faces, config)
    if cloth.any():
        ver_c0, ver_w0 = _project(v, normals, into_matte, config)
    tex_c, tex_w = _project(geo.points, geo.normals, into_matte, config)
    ver_c, ver_w = ver_c0, ver_w0
    frame = _fill.HeadFrame.from_vertices(v)
    # Ears hidden behind hair and the grazing underside of the chin take no photo.
    lip = None if lm is None else float(lm[_fill.LOWER_LIP_ID, 1])
    ver_w = ver_w * _fill.ear_gate(v, ver_c, cols.skin, frame) * _fill.chin_gate(
        v, normals, camera.project(v)[0][:, 1], lip)
    tex_w = tex_w * _fill.ear_gate(geo.points, tex_c, cols.skin, frame) * _fill.chin_gate(
        geo.points, geo.normals, camera.project(geo.points)[0][:, 1], lip)
    # The hair colour as the mesh shows it next to the fill (not the crop's shadowed candidates).
    full = np.nonzero(tex_w >= config.full_weight)[0]  # only these can count (saves ~0.3 s)
    hairness = _fill.hair_prior(v, geo.points[full], frame, cols.side_hair)
    cols = _fill.hair_from_texels(cols, tex_c[full], tex_w[full], hairness, config.full_weight)
    if extras:  # further photos of the person: colours fused by view angle, exposure matched
        tex_c, tex_w, ver_c, ver_w = _fuse_extras(extras, (tex_c, tex_w, ver_c, ver_w), raw, geo, v, faces,
                                                  normals, camera, cols, frame, config, ctx, matte)
    ctx.progress(2, 6, "filling the unseen side")
    # The unseen head: hair on the scalp / skin (per texel, so the hair keeps fine streaks),
    # plus a smooth correction on the mesh that meets the photo's colours without a seam.
    def skin_at(p):
        return None if tone is None else tone.colour_at(p)

    base_v = _fill.scalp_colours(v, cols, frame, skin_at(v))
    correction = _fill.fill_correction(v, faces, ver_c, np.clip(ver_w / config.full_weight, 0, 1), base_v,
                                       decay_length=config.fill_decay)
    fill_texels = _fill.scalp_colours(geo.points, cols, frame, skin_at(geo.points)) + np.einsum(
        "nk,nkc->nc", geo.bary, correction[faces[geo.face]])
    blend = _fill._smoothstep(tex_w, 0.0, config.full_weight)[:, None]
    texture = np.zeros((config.texture_size, config.texture_size, 3), np.float32)
    texture[geo.rows, geo.cols] = blend * tex_c + (1 - blend) * fill_texels
    seen = np.zeros((config.texture_size, config.texture_size), np.float32)
    seen[geo.rows, geo.cols] = tex_w
    texture8 = dilate(np.clip(np.rint(texture * 255), 0, 255).astype(np.uint8), geo.mask, config.unwrap_padding + 4)
    return _Texture(texture8, seen, cols, tone)


def _observe(view, geo, v, faces, normals, cols, frame, config: ProjectionConfig, reference=None, input_view=None):
    """(tex_c, tex_w, ver_c, ver_w) of one further photo (``multiphoto.ExtraView``): direct
    projection only (the mirror is the input view's), shading taken out, clothing, ears
    hidden by hair and the grazing underside of the chin gated as for the input view."""
    crop, alpha, camera = _check_inputs(view.crop, SimpleNamespace(vertices=v, faces=faces, camera=view.camera),
                                        Path(view.path))
    lm = np.asarray(view.landmarks, np.float64)
    frags = rasterize(v, faces, camera)
    matte = alpha & ~_fill.clothing_mask(crop, alpha, lm, cols.skin)
    if reference is not None and config.align:  # on the photos as taken: de-shading needs the pose
        ids, ref_c, _ = reference
        camera, info = _align.align_camera(camera, crop, matte, v[ids], normals[ids], ref_c, v, faces)
        if input_view is not None and input_view[2] is not None:  # then in the head's frame, not the input camera's
            camera, joint = _align.register_jointly(input_view[0], input_view[1], input_view[2], camera, crop, matte,
                                                    v, faces, normals)
            info["used"] |= joint["used"]
        if info["used"]:
            frags = rasterize(v, faces, camera)
    crop = _deshade_like(crop, matte, reference, v, faces, normals, camera, frags, config) if reference is not None \
        else _deshade(crop, alpha, lm, v, faces, normals, camera, frags, config)[0]
    direct = replace(config, mirror=False)
    lip = float(lm[_fill.LOWER_LIP_ID, 1])
    out = []
    into_matte = _projector(crop, matte, camera, v, faces, direct)
    for p, n in ((geo.points, geo.normals), (v, normals)):
        c, w = _project(p, n, into_matte, direct)
        w = w * _fill.ear_gate(p, c, cols.skin, frame) * _fill.chin_gate(p, n, camera.project(p)[0][:, 1], lip)
        out += [c, w]
    return tuple(out)


def _fuse_extras(extras, first, raw, geo, v, faces, normals, camera, cols, frame, config: ProjectionConfig,
                 ctx: RunContext, matte=None):
    """The input view's (tex_c, tex_w, ver_c, ver_w) fused with every further photo's (``_fuse``)."""
    tex = ([first[0]], [first[1]])
    ver = ([first[2]], [first[3]])
    # What the input view sees squarely (not its mirror fill): the reference the others align to.
    ids = np.nonzero((first[3] >= config.full_weight) & (_facing(camera, v, normals) > 0.5))[0]
    ref = sample_bilinear(raw, camera.project(v[ids])[0])  # the input photo as taken (not de-shaded)
    for i, view in enumerate(extras):
        ctx.check_cancelled()
        tc, tw, vc, vw = _observe(view, geo, v, faces, normals, cols, frame, config, (ids, ref, first[2][ids]),
                                  (camera, raw, matte))
        # exposure matched where the input view itself (not its mirror fill) sees the head
        direct = np.zeros(len(v), np.float32)
        direct[ids] = first[3][ids]
        gain = _fuse.exposure_gain(first[2], direct, vc, vw)
        log.info("photo %s: exposure gain %s", view.path, np.round(gain, 3))
        tex[0].append(np.clip(tc * gain, 0, 1))
        tex[1].append(tw)
        ver[0].append(np.clip(vc * gain, 0, 1))
        ver[1].append(vw)
    # The input view's mirror fill yields where another photo sees the true side.
    for (cs, ws), (p, n) in ((tex, (geo.points, geo.normals)), (ver, (v, normals))):
        ws[0] = _fuse.demote_mirror(ws[0], _facing(camera, p, n), ws[1:], config.min_cos, config.cos_ramp,
                                    config.full_weight)
    tex_c, tex_w = _fuse.fuse(*tex)
    ver_c, ver_w = _fuse.fuse(*ver)
    return tex_c, tex_w, ver_c, ver_w


def _facing(camera, points, normals) -> np.ndarray:
    """[N] cosine between the normals and the directions to the camera."""
    to_cam = camera.center - points
    return np.einsum("nk,nk->n", normals, to_cam / np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12))


def _deshade_like(crop, matte, reference, v, faces, normals, camera, frags, config: ProjectionConfig):
    """A further photo de-shaded onto the input view's albedo (``_skin.shading_from_reference``),
    fitted on the points where the input's shading was really taken out (``_fuse.deshaded_reference``)."""
    if not config.deshade:
        return crop
    ids, raw_ref, albedo = reference
    use = _align._usable(camera, matte, v[ids], normals[ids], v, frags)
    use = use[_fuse.deshaded_reference(raw_ref[use], albedo[use], _skin.MAX_GAIN)]  # fitted where truly de-shaded
    seen = sample_bilinear(crop, camera.project(v[ids][use])[0])
    n_px, covered = _skin.pixel_normals(v, faces, normals, frags)
    shade = _skin.shading_from_reference(n_px, covered, seen, normals[ids][use], albedo[use])
    return crop if shade is None else np.clip(crop / shade[..., None], 0, 1).astype(np.float32)


def _deshade(crop, alpha, lm, v, faces, normals, camera, frags, config: ProjectionConfig):
    """(crop [S, S, 3], SkinTone | None): the crop with the photo's shading taken out and the
    skin per region (``_skin``); the crop unchanged and None without landmarks or enough skin."""
    if lm is None or not config.deshade or len(lm) <= max(_skin.FOREHEAD_IDS + _skin.CHEEK_IDS):
        return crop, None
    rough = _fill.estimate_colours(crop, alpha, lm, np.zeros((0, 3))).skin  # for the clothing test only
    cloth = _fill.clothing_mask(crop, alpha, lm, rough)
    n_px, covered = _skin.pixel_normals(v, faces, normals, frags)
    chin = _skin.chin_height(v, normals, camera, lm)
    try:
        return _skin.estimate(crop, alpha, lm, n_px, covered, camera, cloth, chin)[::-1]
    except ValueError as exc:
        log.info("skin tone from the plain crop: %s", exc)
        return crop, None


def _check_inputs(crop_rgba, prior, run_dir: Path) -> tuple[np.ndarray, np.ndarray, Camera]:
    """(crop float [S, S, 3], alpha bool [S, S], input camera at S × S); BadInput if unusable."""
    where = run_dir / "input" / "crop.png"
    a = np.asarray(crop_rgba)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 4 or a.shape[0] != a.shape[1] or a.shape[0] < 16:
        raise BadInput(where, f"crop must be square RGBA uint8 of side ≥ 16, got {a.dtype} {a.shape}", "bad_crop")
    alpha = a[..., 3] > 127
    if alpha.mean() < 0.01:
        raise BadInput(where, "the matte is empty: no foreground to project", "empty_matte")
    v = np.asarray(getattr(prior, "vertices", np.zeros((0, 3))))
    f = np.asarray(getattr(prior, "faces", np.zeros((0, 3))))
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) < 1:
        raise BadInput(run_dir / "prior", f"prior mesh must be vertices [V, 3] and faces [F, 3], got {v.shape} {f.shape}",
                       "bad_prior")
    if not np.all(np.isfinite(v)) or f.min() < 0 or f.max() >= len(v):
        raise BadInput(run_dir / "prior", "prior mesh has non-finite vertices or bad face indices", "bad_prior")
    camera = prior.camera
    s = a.shape[0]
    if (camera.w, camera.h) != (s, s):
        camera = camera.resized(s, s)
    return to_float(a[..., :3]), alpha, camera


def _landmarks(landmarks, prior, run_dir: Path) -> np.ndarray | None:
    """Crop-pixel landmarks [478, 2|3] from the argument, the prior or input/landmarks.json (or None)."""
    if landmarks is not None:
        return np.asarray(landmarks, dtype=np.float64)
    if getattr(prior, "landmarks_crop", None) is not None:
        return np.asarray(prior.landmarks_crop, dtype=np.float64)
    path = run_dir / "input" / "landmarks.json"
    try:
        lm = np.asarray(json.loads(path.read_text())["crop"], dtype=np.float64)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable landmarks (%s); colours from the mesh instead", path, exc)
        return None
    return lm if lm.ndim == 2 and lm.shape[0] == 478 and lm.shape[1] >= 2 else None


def _atlas(v, faces, prior, config: ProjectionConfig):
    """(vmap [V'], faces_split [F, 3], uvs [V', 2]): one vertex per (position, UV) pair."""
    uvs = getattr(prior, "uvs", None)
    faces_uv = getattr(prior, "faces_uv", None)
    if uvs is not None and faces_uv is not None:
        faces_uv = np.asarray(faces_uv, dtype=np.int64)
        pairs = np.stack([faces.ravel(), faces_uv.ravel()], -1)
        unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
        return unique[:, 0], inverse.reshape(-1, 3), np.asarray(uvs, np.float32)[unique[:, 1]]
    if not config.cache_uv:
        return unwrap(v, faces, resolution=config.texture_size, padding=config.unwrap_padding)
    key = hashlib.sha256(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    key.update(f"xatlas-v1-{len(v)}-{config.texture_size}-{config.unwrap_padding}".encode())
    path = cache_dir() / "uv" / f"{key.hexdigest()[:32]}.npz"
    try:
        with np.load(path) as z:
            vmap, faces_split, uvs = z["vmap"], z["faces"], z["uvs"]
        if faces_split.shape == faces.shape and vmap.max() < len(v) and np.array_equal(vmap[faces_split], faces):
            log.info("UV atlas from the cache: %s", path)
            return vmap, faces_split, uvs
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    vmap, faces_split, uvs = unwrap(v, faces, resolution=config.texture_size, padding=config.unwrap_padding)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, vmap=vmap, faces=faces_split, uvs=uvs)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs time
        log.warning("cannot cache the UV atlas in %s: %s", path.parent, exc)
    return vmap, faces_split, uvs


def _uv_raster(uvs: np.ndarray, faces_uv: np.ndarray, config: ProjectionConfig):
    """``rasterize_uv`` of the atlas, cached on disk by the atlas' bytes (a fixed template
    atlas is rasterised once, not per run). Returns (face_id int [S, S], bary float32 [S, S, 3])."""
    key = hashlib.sha256(np.ascontiguousarray(uvs, np.float32).tobytes())
    key.update(np.ascontiguousarray(faces_uv, np.int64).tobytes())
    key.update(f"uvraster-v1-{config.texture_size}".encode())
    path = cache_dir() / "uv" / f"raster_{key.hexdigest()[:32]}.npz"
    size = config.texture_size
    try:
        with np.load(path) as z:
            fid, bary = z["face_id"].astype(np.int64), z["bary"]
        if fid.shape == (size, size) and bary.shape == (size, size, 3) and fid.max() < len(faces_uv):
            return fid, bary
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    fid, bary = rasterize_uv(uvs, faces_uv, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, face_id=fid.astype(np.int32), bary=bary.astype(np.float32))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the UV raster in %s: %s", path.parent, exc)
    return fid, bary


def _projector(crop, mask, camera, v, faces, config: ProjectionConfig):
    """The crop prepared once for projecting points into it (``recon.bake.point_projector``:
    depth-map occlusion, view angle, matte border); crop float [S, S, 3], mask bool [S, S]."""
    return point_projector(crop, camera, mask, v, faces, config.border_px)


def _project(points, normals, project, config: ProjectionConfig):
    """Photo colour and weight of surface points: direct, then mirrored where the direct view fails.

    points, normals: [N, 3]; project: ``_projector``'s. Returns (colour [N, 3], weight [N]).
    """
    kw = dict(angle_power=config.angle_power, min_cos=config.min_cos, cos_ramp=config.cos_ramp)
    c, w = project(points, normals, eps=config.eps, **kw)
    if not config.mirror:
        return c, w
    flip = np.array([-1.0, 1.0, 1.0])
    cm, wm = project(points * flip, normals * flip, eps=config.mirror_eps, **kw)
    wm = wm * config.mirror_strength
    # The mirror only tops up what the true side lacks: it cannot outvote a frontal view.
    wm = np.minimum(wm, np.clip(config.full_weight - w, 0, None))
    total = w + wm
    colour = np.where(total[:, None] > 0, (c * w[:, None] + cm * wm[:, None]) / np.maximum(total, 1e-12)[:, None], 0)
    return colour.astype(np.float32), total.astype(np.float32)


def _is_closed(faces: np.ndarray) -> bool:
    """Every edge shared by exactly two faces with opposite directions (closed, consistently wound)."""
    f = np.asarray(faces, np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1 if f.size else 1
    fwd = np.unique(directed[:, 0] * n + directed[:, 1])
    rev = np.unique(directed[:, 1] * n + directed[:, 0])
    return len(fwd) == len(directed) and np.array_equal(fwd, rev)


def _frontal(weight: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Vertices seen squarely and facing forward (−Y): face skin for the colour fallback."""
    return (weight > 0.5) & (normals[:, 1] < -0.7)
