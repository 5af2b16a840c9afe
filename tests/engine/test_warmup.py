"""``gen3dface warmup`` leaves every cache a first run would build (so that run is fast)."""
from __future__ import annotations

import time

import pytest


@pytest.mark.slow
def test_warmup_fills_the_caches_a_run_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from engine.prior import template
    from engine.warmup import warm_caches

    parts = warm_caches(texture_size=256)
    assert set(parts) == {"template_s", "uv_atlas_s", "uv_raster_s"}
    cache = tmp_path / "gen3dface"
    assert template.cache_path().is_file() and any((cache / "uv").glob("raster_*.npz"))
    t0 = time.perf_counter()
    data = template.load_data()
    template.load_uv(data)
    assert time.perf_counter() - t0 < max(1.0, 0.2 * (parts["template_s"] + parts["uv_atlas_s"]))
