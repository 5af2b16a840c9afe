"""recon.bake: a textured mesh's own renders baked back onto it (the texture is known)."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from recon.bake import BakeConfig, bake, push_pull, texel_samples, uv_fragments
from recon.cameras import orbit_camera
from recon.texture import render_textured
from recon.uv import rasterize_uv, unwrap

S = 256


def _pattern(points):
    """Colour as a function of the surface point (symmetric in x: mirrored halves agree)."""
    x, y, z = np.abs(points[:, 0]), points[:, 1], points[:, 2]
    return 0.5 + 0.35 * np.stack([np.sin(30 * x + 2 * z), np.cos(25 * y), np.sin(28 * z + 1)], -1)


def _true_texture(v, f, uvs, fu, size=S):
    s = texel_samples(v, f, uvs, fu, size)
    acc = np.zeros((size * size, 3))
    cnt = np.zeros(size * size)
    np.add.at(acc, s.pix.numpy(), _pattern(s.points.numpy().astype(np.float64)))
    np.add.at(cnt, s.pix.numpy(), 1)
    tex = np.zeros((size * size, 3), np.float32)
    tex[cnt > 0] = acc[cnt > 0] / cnt[cnt > 0, None]
    return tex.reshape(size, size, 3)


def _views(v, f, uvs, fu, tex, n=16, size=128, scale=1.0):
    out = []
    for i in range(n):
        cam = orbit_camera(360.0 * i / n, 35.0 * np.sin(4 * np.pi * i / n), 0.6, 40, size)
        colour, covered = render_textured(v, f, uvs, fu, tex, cam)
        out.append((np.concatenate([colour * scale if i == 3 else colour, covered[..., None]], -1), cam, None))
    return out


def _psnr(a, b, mask):
    return 10 * np.log10(1 / max(float(np.mean((a[mask] - b[mask]) ** 2)), 1e-12))


@pytest.fixture(scope="module")
def blob():
    s = trimesh.creation.icosphere(3, radius=0.1)
    s.vertices[:, 2] *= 1.3
    vmap, fu, uvs = unwrap(s.vertices, s.faces, resolution=S, padding=3)
    return s.vertices[vmap], fu, uvs


def test_fragments_match_the_numpy_uv_raster(blob):
    v, f, uvs = blob
    pix, face, bary = uv_fragments(uvs, f, S)
    fid, _ = rasterize_uv(uvs, f, S)
    mine = np.zeros(S * S, bool)
    mine[pix.numpy()] = True
    assert (mine == (fid.reshape(-1) >= 0)).mean() > 0.999
    np.testing.assert_allclose(bary.sum(1).numpy(), 1, atol=1e-5)


def test_bake_own_renders_back(blob):
    v, f, uvs = blob
    tex = _true_texture(v, f, uvs, f)
    r = bake(v, f, uvs, f, _views(v, f, uvs, f, tex), BakeConfig(size=S, border_px=1.0), cull_back=True)
    assert r.coverage > 0.97
    assert _psnr(r.texture, tex, r.seen) >= 30
    assert np.all(r.texture[~r.chart] == 0) or r.texture[~r.chart].max() <= 1  # padded ring only
    assert not (r.filled & r.seen).any() and np.array_equal(r.filled | r.seen, r.chart)


def test_equalisation_evens_out_a_darker_view(blob):
    v, f, uvs = blob
    tex = _true_texture(v, f, uvs, f)
    views = _views(v, f, uvs, f, tex, scale=0.6)  # view 3 is 40 % darker
    plain = bake(v, f, uvs, f, views, BakeConfig(size=S, border_px=1.0, equalize=False))
    even = bake(v, f, uvs, f, views, BakeConfig(size=S, border_px=1.0))
    assert even.gains[3].mean() > 1.3 * np.delete(even.gains, 3, 0).mean()
    assert _psnr(even.texture, tex, even.seen) > _psnr(plain.texture, tex, plain.seen) + 2


def test_mirrored_overlapping_islands_bake_their_own_surface():
    """Two mirror-image halves share one UV island (the right's mirrored: opposite winding in UV)."""
    half = trimesh.creation.icosphere(3, radius=0.08)
    half.vertices[:, 0] += 0.1
    vmap, fu, uvs = unwrap(half.vertices, half.faces, resolution=S, padding=3)
    left = half.vertices[vmap]
    right = left * np.array([-1.0, 1, 1])
    v = np.vstack([left, right])
    f = np.vstack([fu, fu[:, ::-1] + len(left)])  # mirrored: flip the winding to stay outward
    uv2 = np.vstack([uvs, uvs])
    tex = _true_texture(v, f, uv2, f)
    views = _views(v, f, uv2, f, tex, size=160)
    r = bake(v, f, uv2, f, views, BakeConfig(size=S, border_px=1.0))
    assert r.coverage > 0.97 and _psnr(r.texture, tex, r.seen) >= 30
    # only the left surface (the right one's UVs dropped): its own colours, same island
    one = bake(left, fu, uvs, fu, views[:0] + [(im, cam, None) for im, cam, _ in views], BakeConfig(size=S))
    assert one.coverage > 0.9


def test_push_pull_fills_from_neighbours():
    tex = np.zeros((64, 64, 3), np.float32)
    known = np.zeros((64, 64), bool)
    known[:, :32] = True
    tex[:, :32] = [0.2, 0.4, 0.6]
    out = push_pull(tex, known)
    np.testing.assert_allclose(out[:, 40], [[0.2, 0.4, 0.6]] * 64, atol=1e-5)
    np.testing.assert_array_equal(out[known], tex[known])


def test_autofill_callback_and_push_pull(blob):
    v, f, uvs = blob
    tex = _true_texture(v, f, uvs, f)
    views = _views(v, f, uvs, f, tex, n=2)  # two views: the poles are unseen
    calls = []
    r = bake(v, f, uvs, f, views, BakeConfig(size=S), fill=lambda p: calls.append(len(p)) or _pattern(p))
    assert r.autofilled > 0.05 and calls == [int(r.filled.sum())]
    assert _psnr(r.texture, tex, r.filled) > 25
    pp = bake(v, f, uvs, f, views, BakeConfig(size=S))
    assert pp.texture[pp.filled].min() > 0  # filled, not black


def test_bad_sizes():
    with pytest.raises(ValueError, match="8192"):
        BakeConfig(size=16384)


def test_uv_transfer_onto_itself_keeps_the_layout(blob):
    from recon.uv_transfer import transfer_uvs

    v, f, uvs = blob
    vmap, fnew, uv2 = transfer_uvs(v, f, uvs, f, v, f)
    np.testing.assert_allclose(uv2[fnew], uvs[f], atol=1e-6)
    assert np.array_equal(vmap[fnew], f)


def test_edge_expansion_grows_rings_of_neighbour_means():
    """Independent check: ring k is the chessboard ring at distance k; its texels hold the mean
    of their already-filled 8-neighbours (computed here by a plain loop)."""
    from recon.bake import expand_edges

    rng = np.random.default_rng(3)
    mask = np.zeros((20, 24), bool)
    mask[6:10, 5:9] = mask[14, 18] = True
    tex = rng.random((20, 24, 3)).astype(np.float32)
    out = expand_edges(tex, mask, 3)
    want = np.where(mask[..., None], tex, 0)
    known = mask.copy()
    for _ in range(3):
        ring = [(i, j) for i in range(20) for j in range(24) if not known[i, j]
                and known[max(0, i - 1):i + 2, max(0, j - 1):j + 2].any()]
        new = {}
        for i, j in ring:
            nb = [(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)
                  if 0 <= a < 20 and 0 <= b < 24 and known[a, b]]
            new[i, j] = np.mean([want[a, b] for a, b in nb], 0)
        for (i, j), c in new.items():
            want[i, j], known[i, j] = c, True
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert (out[~known] == 0).all() and known.sum() > mask.sum() + 50


def test_direction_bins_skip_only_samples_a_view_cannot_see(blob):
    """The bins a view skips hold no sample it sees: the same samples, colours and weights
    as projecting every sample (a concave, lumpy mesh, cameras near and far)."""
    import torch

    from recon.bake import _DirectionBins, _View, pack

    s = trimesh.creation.icosphere(3, radius=0.1)
    d = s.vertices / 0.1
    v0 = s.vertices * (1 + 0.25 * np.sin(5 * d[:, 0]) * np.cos(4 * d[:, 1]))[:, None]
    vmap, fu, uvs = unwrap(v0, s.faces, resolution=S, padding=3)
    v = v0[vmap]
    samples = texel_samples(v, fu, uvs, fu, S)
    bins = _DirectionBins(samples.points, samples.normals)
    packed = pack(samples.points[bins.order], samples.normals[bins.order])
    cfg = BakeConfig(size=S, border_px=1.0)
    img = np.full((96, 96, 3), 0.5, np.float32)
    skipped = 0
    for i, dist in enumerate([0.25, 0.4, 0.8, 0.3, 0.6]):
        cam = orbit_camera(70.0 * i, 50.0 * np.sin(i), dist, 50, 96)
        view = _View(img, cam, None, v, fu, cfg, "cpu")
        idx_all, _, w_all = view.sample_packed(packed, cfg, 1e-3)
        got_i, got_w = [], []
        ranges = bins.ranges(view.centre, cfg.min_cos)
        for a, e in ranges:
            idx, _, w = view.sample_packed(packed[a:e], cfg, 1e-3)
            got_i.append(idx + a)
            got_w.append(w)
        skipped += len(packed) - sum(e - a for a, e in ranges)
        order = torch.argsort(torch.cat(got_i))
        assert torch.equal(torch.cat(got_i)[order], idx_all)
        torch.testing.assert_close(torch.cat(got_w)[order], w_all)
    assert skipped > 0.2 * 5 * len(packed)  # the bins do skip work
