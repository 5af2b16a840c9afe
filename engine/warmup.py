"""``gen3dface warmup``: build once what a first run would otherwise build (the first run is then as fast as the rest).

Measured causes of a slow first run on a new machine (the cache folder empty): the
built-in template is generated from its implicit surface (marching cubes, decimation,
landmark embedding, shape bases: ~5 s CPU), its UV atlas is unwrapped with xatlas (~5 s),
and the atlas is rasterised into texel geometry at the projection backend's texture size.
All three land in the cache folder (``engine.paths.cache_dir``) and every later run reads
them. mediapipe's graphs (~1 s) are built per process and cannot be kept. Set-up
(``scripts/setup.sh``) runs this once.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def warm_caches(texture_size: int = 1024) -> dict:
    """Build the template, its UV atlas and their texel raster in the cache; returns seconds per part."""
    import numpy as np

    from .multiview import projection
    from .prior import template

    out = {}
    t0 = time.perf_counter()
    data = template.load_data()
    out["template_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    uvs, faces_uv = template.load_uv(data)
    out["uv_atlas_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    faces = np.asarray(data.faces, np.int64)
    pairs = np.stack([faces.ravel(), np.asarray(faces_uv).ravel()], -1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    cfg = projection.ProjectionConfig(texture_size=texture_size)
    projection._uv_raster(np.asarray(uvs, np.float32)[unique[:, 1]], inverse.reshape(-1, 3), cfg)
    out["uv_raster_s"] = round(time.perf_counter() - t0, 2)
    log.info("caches warm: %s", out)
    return out
