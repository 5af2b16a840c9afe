"""Synthetic portraits rendered by the project: a textured template head with a known skin tone.

The truth head is the built-in template (mean shape) textured once from the bundled portrait
by the projection backend; ``toned`` rescales its colours so the forehead/cheek skin has a
chosen albedo (light → dark), and ``photo`` renders it from any orbit camera with the
backend's own Lambert shading onto a plain background: a photo whose true head, texture and
camera are known, and in which mediapipe finds the face (checked by the tests that use it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Skin albedos from light to dark (sRGB, 0..1), roughly Fitzpatrick I … VI.
SKIN_TONES = {
    "I": (0.93, 0.80, 0.72),
    "III": (0.80, 0.62, 0.50),
    "IV": (0.66, 0.47, 0.34),
    "V": (0.45, 0.31, 0.22),
    "VI": (0.29, 0.20, 0.15),
}


@dataclass(frozen=True)
class TruthHead:
    """vertices [V, 3], faces [F, 3] (split by UV seams), uvs [V, 2], normals [V, 3],
    texture float32 [T, T, 3] in [0, 1], skin float32 [3]: the texture's cheek/forehead skin."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray
    texture: np.ndarray
    skin: np.ndarray


def truth_head(work: Path, texture_size: int = 512) -> TruthHead:
    """The template's mean head textured from the bundled portrait (one projection run in ``work``)."""
    from skimage import data

    from engine import preprocess, prior
    from engine.context import RunContext
    from engine.multiview import projection
    from engine.prior.template import TemplateHead
    from recon.raster import vertex_normals

    photo = Path(work) / "astronaut.png"
    from PIL import Image

    Image.fromarray(data.astronaut()).save(photo)
    ctx = RunContext()
    pre = preprocess.run(photo, work, preprocess.PreprocessConfig(size=256), ctx)
    head = prior.run(pre, work, prior.PriorConfig(model="template"), ctx)
    cfg = projection.ProjectionConfig(n_views=1, size=64, texture_size=texture_size, supersample=1)
    res = projection.run(pre.crop, head, work, cfg, ctx, landmarks=pre.landmarks_crop)
    model = TemplateHead()
    import torch

    with torch.no_grad():
        mean = model.vertices(torch.zeros(model.n_shape), torch.zeros(model.n_expr), None).numpy().astype(np.float64)
    faces = np.asarray(head.faces, np.int64)
    uvs, faces_uv = head.uvs, head.faces_uv
    pairs = np.stack([faces.ravel(), np.asarray(faces_uv).ravel()], -1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    v = mean[unique[:, 0]]
    f = inverse.reshape(-1, 3)
    n = vertex_normals(mean, faces)[unique[:, 0]]
    return TruthHead(v, f, np.asarray(uvs, np.float32)[unique[:, 1]], n,
                     res.texture.astype(np.float32) / 255, np.asarray(res.colours["skin"], np.float32))


def toned(truth: TruthHead, tone) -> TruthHead:
    """The head with its colours scaled per channel so its skin becomes ``tone`` (sRGB 0..1)."""
    from dataclasses import replace

    gain = np.asarray(tone, np.float32) / np.maximum(truth.skin, 1e-3)
    return replace(truth, texture=np.clip(truth.texture * gain, 0, 1), skin=np.asarray(tone, np.float32))


def photo(truth: TruthHead, azimuth: float = 0.0, elevation: float = 0.0, size: int = 384,
          background=(0.55, 0.6, 0.65), ambient: float = 0.45) -> np.ndarray:
    """RGB uint8 [size, size, 3]: the head seen from an orbit camera (0.7 m, 30° fov)."""
    from engine.multiview._shade import render_rgba
    from recon.cameras import orbit_camera

    cam = orbit_camera(azimuth, elevation, 0.7, 30.0, size)
    rgba = render_rgba(truth.vertices, truth.faces, truth.uvs, truth.normals, truth.texture, cam,
                       ambient=ambient, ss=2, closed=True).astype(np.float32) / 255
    a = rgba[..., 3:]
    rgb = rgba[..., :3] * a + np.asarray(background, np.float32) * (1 - a)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def head_regions(vertices: np.ndarray, camera, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """bool [V] masks on a fitted head (Blender world, face toward −Y): "cheek" (seen in the
    photo, around mediapipe's cheek points), "ear" (the ears, ``HeadFrame``), "neck" (the back
    and sides of the neck, facing away from the input camera)."""
    from engine.multiview._fill import HeadFrame

    v = np.asarray(vertices, np.float64)
    frame = HeadFrame.from_vertices(v)
    xy, _ = camera.project(v)
    lm = np.asarray(landmarks, np.float64)[:, :2]
    r = 0.035 * camera.w
    near = np.zeros(len(v), bool)
    for i in (50, 280, 205, 425, 117, 346):
        near |= np.linalg.norm(xy - lm[i], axis=1) < r
    front = v[:, 1] < np.median(v[:, 1])
    cheek = near & front
    ear = frame.ear_weight(v) > 0.6
    chin_z = float(v[cheek, 2].min()) - 0.05 if cheek.any() else frame.z_top - 0.25
    neck = (v[:, 2] < chin_z) & (v[:, 2] > v[:, 2].min() + 0.015) & (v[:, 1] > frame.centre[1] - 0.01)
    return {"cheek": cheek, "ear": ear & ~cheek, "neck": neck & ~ear}


def region_lab(vertices, faces, uvs, normals, texture, cameras, regions: dict) -> dict[str, np.ndarray]:
    """Median CIE Lab [3] of each region's pixels over unlit (albedo) renders from ``cameras``.

    A pixel belongs to a region when all three vertices of its face do."""
    from skimage.color import rgb2lab

    from engine.multiview._shade import render_rgba
    from recon.raster import rasterize

    f = np.asarray(faces, np.int64)
    pix = {k: [] for k in regions}
    for cam in cameras:
        rgba = render_rgba(vertices, f, uvs, normals, texture, cam, ambient=1.0, ss=1, closed=True)
        frags = rasterize(vertices, f, cam, cull_back=True)
        fid = frags.face_id
        ok = fid >= 0
        for k, m in regions.items():
            face_in = m[f].all(axis=1)
            sel = ok & face_in[np.where(ok, fid, 0)]
            pix[k].append(rgba[sel][:, :3])
    out = {}
    for k, p in pix.items():
        p = np.concatenate(p).astype(np.float64) / 255
        out[k] = np.median(rgb2lab(p[None])[0], axis=0) if len(p) >= 20 else None
    return out


def run_projection(photos: list[np.ndarray], work: Path, size: int = 256, texture_size: int = 512, n_views: int = 4,
                   **projection_kw):
    """Preprocess + prior + projection on synthetic photos in-process (as ``generate`` would).

    Returns (head, result, pre_list, split) with split = (vmap, faces_split, uvs)."""
    from PIL import Image

    from engine import preprocess, prior
    from engine.context import RunContext
    from engine.multiview import projection

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ctx = RunContext()
    paths = []
    for i, im in enumerate(photos):
        paths.append(work / f"photo_{i}.png")
        Image.fromarray(im).save(paths[-1])
    pre = preprocess.run(paths[0], work, preprocess.PreprocessConfig(size=size), ctx)
    head = prior.run(pre, work, prior.PriorConfig(model="template"), ctx)
    cfg = projection.ProjectionConfig(n_views=n_views, size=64, texture_size=texture_size, supersample=1,
                                      **projection_kw)
    res = projection.run(pre.crop, head, work, cfg, ctx, landmarks=pre.landmarks_crop)
    split = projection._atlas(np.asarray(head.vertices, np.float64), np.asarray(head.faces, np.int64), head, cfg)
    return head, res, [pre], split


def skin_delta_e(head, res, pre, split, azimuths=(0, 45, -45, 90, -90, 135, -135, 180)) -> dict[str, float]:
    """CIE76 ΔE between the seen cheek skin and the invented ear / neck skin, in unlit views."""
    from recon.cameras import orbit_camera
    from recon.raster import vertex_normals

    vmap, fs, uvs = split
    v = np.asarray(head.vertices, np.float64)
    regions = {k: m[vmap] for k, m in head_regions(v, head.camera.resized(pre.crop.shape[0], pre.crop.shape[0]),
                                                   pre.landmarks_crop).items()}
    n = vertex_normals(v, np.asarray(head.faces))[vmap]
    cams = [orbit_camera(a, 0, 0.7, 30.0, 128) for a in azimuths]
    lab = region_lab(v[vmap], fs, uvs, n, res.texture, cams, regions)
    return {k: float(np.linalg.norm(lab[k] - lab["cheek"])) for k in ("ear", "neck") if lab[k] is not None}


def _lab_of(rgb) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, np.float64).reshape(1, 1, 3))[0, 0]


def run_photos(photos: list[np.ndarray], work: Path, size: int = 256, texture_size: int = 512, n_views: int = 4,
               **projection_kw):
    """Like ``run_projection`` through ``multiphoto`` (one head fitted to every photo, colours fused).

    Returns (head, result, extras)."""
    from PIL import Image

    from engine import multiphoto, preprocess, prior
    from engine.context import RunContext
    from engine.multiview import projection

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ctx = RunContext()
    paths = []
    for i, im in enumerate(photos):
        paths.append(work / f"photo_{i}.png")
        Image.fromarray(im).save(paths[-1])
    pres = multiphoto.preprocess_all(paths, work, preprocess.PreprocessConfig(size=size), ctx)
    head, extras = multiphoto.fit_prior(pres, work, prior.PriorConfig(model="template"), ctx)
    cfg = projection.ProjectionConfig(n_views=n_views, size=64, texture_size=texture_size, supersample=1,
                                      **projection_kw)
    res = projection.run(pres[0][1].crop, head, work, cfg, ctx, landmarks=pres[0][1].landmarks_crop, extras=extras)
    return head, res, extras


def view_psnr(head, res, truth: TruthHead, azimuths, elevation: float = 0.0, size: int = 128,
              ambient: float = 0.6, save: Path | None = None) -> float:
    """PSNR (dB) of the generated head's renders against the truth's over ``azimuths``, on the
    pixels either head covers (the background they share would only dilute the difference)."""
    from engine.multiview import projection
    from engine.multiview._shade import render_rgba
    from recon.cameras import orbit_camera
    from recon.raster import vertex_normals

    v = np.asarray(head.vertices, np.float64)
    cfg = projection.ProjectionConfig(cache_uv=True)
    vmap, fs, uvs = projection._atlas(v, np.asarray(head.faces, np.int64), head, cfg)
    n = vertex_normals(v, np.asarray(head.faces))[vmap]
    err = []
    for az in azimuths:
        cam = orbit_camera(az, elevation, 0.7, 30.0, size)
        a = render_rgba(v[vmap], fs, uvs, n, res.texture, cam, ambient=ambient, ss=1, closed=True)
        b = render_rgba(truth.vertices, truth.faces, truth.uvs, truth.normals, truth.texture, cam, ambient=ambient,
                        ss=1, closed=True)
        def on_grey(x):
            x = x.astype(np.float64) / 255
            return x[..., :3] * x[..., 3:] + 0.5 * (1 - x[..., 3:])
        head_px = (a[..., 3] > 0) | (b[..., 3] > 0)  # the head, not the shared background
        err.append(((on_grey(a) - on_grey(b)) ** 2)[head_px].mean())
        if save is not None:
            from PIL import Image

            pair = np.concatenate([on_grey(b), on_grey(a)], 1)
            Image.fromarray(np.clip(pair * 255, 0, 255).astype(np.uint8)).save(f"{save}_{az:g}.png")
    return float(10 * np.log10(1.0 / np.mean(err)))


def with_side_mark(truth: TruthHead) -> TruthHead:
    """The head with a mark only its +X side has (dark blue-grey stripes over the temple, cheek and
    jaw, like a tattoo): a frontal photo cannot know it (its mirror fill shows the −X side)."""
    from dataclasses import replace

    from recon.texture import texel_geometry

    size = truth.texture.shape[0]
    geo = texel_geometry(truth.vertices, truth.faces, truth.uvs, truth.faces, size)
    p = geo.points
    on = (p[:, 0] > 0.035) & (p[:, 2] > -0.09) & (p[:, 2] < 0.06) & (np.abs(p[:, 1]) < 0.07)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * p[:, 2] / 0.02)
    ink = np.array([0.18, 0.22, 0.35], np.float32)
    tex = truth.texture.copy()
    t = (0.8 * stripes[on])[:, None]
    tex[geo.rows[on], geo.cols[on]] = (1 - t) * tex[geo.rows[on], geo.cols[on]] + t * ink
    return replace(truth, texture=tex)
