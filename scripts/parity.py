"""Parity of a converted checkpoint with its reference implementation (not part of the test run).

    python scripts/parity.py --reference-dir /tmp/ref_sd --family syncdreamer
    python scripts/parity.py --reference-dir /tmp/ref_md --family morphable

Builds the reference model from a checkout of the public repository (imported from DIR at run
time, never copied here) with a shrunk UNet (``--channels``, the volume nets at full width),
random weights and a fixed seed; converts its state dict with ``weights/`` and loads the folder
through the engine; feeds both the same input image, CLIP embedding, noise and seed through
our *shipped* conventions (cameras, pixel convention, view embedding, posterior sample, η),
and prints per view the max and relative (‖Δ‖/‖ref‖) differences of the predicted noise and of
one DDIM step, plus the intermediates in order and the first one that diverges (> 1e-4).

Run it with a Python that has the reference's dependencies (torch, pytorch-lightning 1.9,
omegaconf, einops, kornia) and this repository on PYTHONPATH. Morphable Diffusion's sparse
ConvNet needs spconv (CUDA): without it the script compares what runs without it (the
camera/volume inputs, per-vertex features, the voxelisation) and says so.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
THRESHOLD = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def report(name: str, ours: torch.Tensor, ref: torch.Tensor, log: list, per_view: bool = False) -> None:
    ours, ref = ours.detach().float().reshape(ref.shape), ref.detach().float()
    r, m = rel(ours, ref), float((ours - ref).abs().max())
    log.append((name, r))
    print(f"{name:32s} max|Δ| {m:.3e}  ‖Δ‖/‖ref‖ {r:.3e}  {'ok' if r <= THRESHOLD else 'DIVERGES'}")
    if per_view:
        for i in range(ref.shape[0]):
            print(f"    view {i:2d}: max|Δ| {float((ours[i] - ref[i]).abs().max()):.3e}  rel {rel(ours[i], ref[i]):.3e}")


def _stub_encoders() -> None:
    """The reference's ``ldm.modules.encoders.modules`` imports openai-clip and more at import time;
    CLIP is not compared here (its preprocessing is, below), so a stand-in module is installed."""
    mod = types.ModuleType("ldm.modules.encoders.modules")

    class FrozenCLIPImageEmbedder(torch.nn.Module):  # never instantiated (see _build_reference)
        pass

    mod.FrozenCLIPImageEmbedder = FrozenCLIPImageEmbedder
    sys.modules["ldm.modules.encoders.modules"] = mod
    import pytorch_lightning  # noqa: F401 - before the stubs: it probes for torchvision itself

    # imported by the reference's ldm/util.py and autoencoder.py but not used by what runs here
    for name, attrs in (("torchvision", {}), ("taming", {}), ("taming.modules", {}), ("taming.modules.vqvae", {}),
                        ("taming.modules.vqvae.quantize", {"VectorQuantizer2": object})):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.__dict__.update(attrs)
            sys.modules[name] = stub


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """zero_module() outputs would make the depth attention a no-op: give every zero tensor values."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _stub_spconv() -> None:
    """Morphable's reference imports spconv (CUDA; its CPU build is unreliable, docs/architecture.md). Without it,
    its sparse ConvNet runs on our CPU sparse conv (same weight layout, tested equal to dense conv3d
    at the active sites): everything else in the comparison is the reference's own code."""
    try:
        import spconv.pytorch  # noqa: F401
        return
    except ImportError:
        pass
    from engine.multiview.diffusion import sparse_conv as ours

    class SubMConv3d(ours.SubMConv3d):
        def __init__(self, cin, cout, k, bias=False, indice_key=None):
            super().__init__(cin, cout, k)

    class SparseConv3d(ours.SparseConv3d):
        def __init__(self, cin, cout, k, stride=1, padding=0, bias=False, indice_key=None):
            super().__init__(cin, cout, k, stride, padding)

    def tensor(features, indices, spatial_shape, batch_size):
        return ours.SparseVoxels(indices.long(), features, tuple(int(s) for s in spatial_shape), batch_size)

    for name, attrs in (("spconv", {}), ("spconv.pytorch", {}), ("spconv.pytorch.conv", dict(SubMConv3d=SubMConv3d, SparseConv3d=SparseConv3d)),
                        ("spconv.pytorch.modules", dict(SparseSequential=ours.SparseSequential)),
                        ("spconv.pytorch.core", dict(SparseConvTensor=tensor))):
        stub = types.ModuleType(name)
        stub.__dict__.update(attrs)
        sys.modules[name] = stub
    print("spconv not installed: the reference's sparse ConvNet runs on our CPU sparse conv")


def _unet_config(mc: int, family: str = "syncdreamer") -> dict:
    where = "sync_dreamer_attention" if family == "syncdreamer" else "attention"
    return dict(target=f"ldm.models.diffusion.{where}.DepthWiseAttention", params=dict(
        volume_dims=[64, 128, 256, 512], image_size=32, in_channels=8, out_channels=4, model_channels=mc,
        attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8,
        use_spatial_transformer=True, transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False))


def _build_reference(ref_dir: Path, family: str, mc: int, seed: int):
    sys.path.insert(0, str(ref_dir))
    _stub_encoders()
    if family == "morphable":
        _stub_spconv()
    name = "sync_dreamer" if family == "syncdreamer" else "morphable_diffusion"
    module = __import__(f"ldm.models.diffusion.{name}", fromlist=["SyncMultiviewDiffusion"])
    cls = module.SyncMultiviewDiffusion
    cls._init_clip_image_encoder = lambda self: None  # CLIP weights are not part of the comparison
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(ref_dir)  # the reference reads meta_info/camera-16.pkl relative to its checkout
    try:
        model = cls(_unet_config(mc, family), scheduler_config=None, view_num=16, image_size=256, sample_steps=50)
    finally:
        os.chdir(cwd)
    _randomise(model, seed)
    return model.eval(), module


def _convert(model, family: str, mc: int, out: Path):
    from weights import conventions
    from weights.architectures import SD15_UNET, SD_VAE, morphable_conditioner, syncdreamer_conditioner
    from weights.convert import convert

    blocks = (mc, 2 * mc, 4 * mc, 4 * mc)
    cond = (syncdreamer_conditioner if family == "syncdreamer" else morphable_conditioner)(latent=32)
    cond = dict(cond, unet_block_out_channels=blocks)
    unet = dict(SD15_UNET, block_out_channels=blocks)
    state = {k: v for k, v in model.state_dict().items()}
    return convert("reference (random weights)", out, cond, unet, SD_VAE, state=state,
                   conventions=conventions.BUILDERS[family]())


def _clip_preprocessing(rgb: torch.Tensor) -> None:
    """Our kornia_bicubic resize against kornia itself, on the same [0, 1] image."""
    from engine.multiview.diffusion import clip

    try:
        import kornia
    except ImportError:
        print("CLIP preprocessing: kornia not installed, not compared")
        return
    x = rgb * 2 - 1
    ref = (kornia.geometry.resize(x, (224, 224), interpolation="bicubic", align_corners=True, antialias=False) + 1) / 2
    ours = clip.resize(rgb, 224, "kornia_bicubic")
    old = clip.resize(rgb, 224, "antialias_bicubic")
    print(f"CLIP preprocessing (kornia {kornia.__version__}): ours max|Δ| {float((ours - ref).abs().max()):.3e} "
          f"rel {rel(ours, ref):.3e}; the previous antialiased resize: rel {rel(old, ref):.3e}")


def syncdreamer(args) -> list:
    from engine.multiview.diffusion import frames, load_pipeline
    from recon.cameras import Camera
    from weights.conventions import syncdreamer_w2c

    log: list = []
    ref, _ = _build_reference(Path(args.reference_dir), "syncdreamer", args.channels, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load_pipeline(_convert(ref, "syncdreamer", args.channels, Path(tmp) / "m"), "cpu", "fp32")
    g = torch.Generator().manual_seed(args.seed)
    rgb = torch.rand(1, 3, 256, 256, generator=g)
    clip_embed = torch.randn(1, 768, generator=g)
    x_t = torch.randn(16, 4, 32, 32, generator=g)
    el_in = math.radians(args.input_elevation)
    _clip_preprocessing(rgb)
    with torch.no_grad():
        # 1. input latent: a posterior sample, same seed
        torch.manual_seed(args.seed + 7)
        ref_lat = ref.encode_first_stage(rgb * 2 - 1, True)
        m = np.eye(4)
        m[:3] = syncdreamer_w2c(0.0, args.input_elevation, 1.5)
        input_cam = Camera(np.linalg.inv(m) @ np.diag([1.0, -1, -1, 1]), 280, 280, 128, 128, 256, 256)
        targets = frames.CheckpointFrame(pipe.conventions).checkpoint_cameras()
        cond = pipe.prepare_conditions(rgb, input_cam, np.zeros((3, 3)), targets, clip_embed, "sample",
                                       torch.Generator().manual_seed(args.seed + 7))
        report("input latent (posterior sample)", cond.input_latent, ref_lat, log)
        # 2. view embedding and context
        v_ref = ref.get_viewpoint_embedding(1, torch.tensor([el_in]))[0]
        report("view embedding", cond.v_embed, v_ref, log)
        ctx_ref = ref.cc_projection(torch.cat([clip_embed[:, None].expand(16, 1, 768), v_ref[:, None]], -1))
        report("context (cc_projection)", cond.context, ctx_ref, log)
        # 3. the denoiser at the first DDIM step
        pipe.scheduler.set_timesteps(50)
        t = int(pipe.scheduler.timesteps[0])
        ts = torch.full((1,), t, dtype=torch.long)
        t_emb_ref = ref.embed_time(ts)
        vol_ref = ref.spatial_volume.construct_spatial_volume(x_t[None], t_emb_ref, v_ref[None], ref.poses, ref.Ks)
        cm = pipe.conditioner
        t_emb = cm.embed_time(ts)
        report("time embedding", t_emb, t_emb_ref, log)
        vol = cm.build_volume(x_t, t_emb, cond.v_embed, cond.c2w, cond.intr, 256, None, 4)
        report("spatial volume", vol, vol_ref, log)
        e_ref = []
        for i in range(0, 16, 4):
            idx = torch.arange(i, i + 4)[None]
            c_, f_, x_ = ref.get_target_view_feats(ref_lat, vol_ref, clip_embed[:, None], t_emb_ref, v_ref[None], idx)
            xn = x_t[i:i + 4]
            tt = ts.repeat(4)
            e_ref.append(ref.model.predict_with_unconditional_scale(xn, tt, c_, f_, x_, args.guidance)
                         if args.guidance != 1 else ref.model(xn, tt, c_, f_, x_))
        e_ref = torch.cat(e_ref)
        eps = pipe.predict_noise(x_t, t, cond, args.guidance, 4)
        report("predicted noise (CFG %.1f)" % args.guidance, eps, e_ref, log, per_view=True)
        # 4. one DDIM step, η = 1 (the reference's default), the same noise
        from ldm.models.diffusion.sync_dreamer import SyncDDIMSampler

        sampler = SyncDDIMSampler(ref, 50, "uniform", 1.0, latent_size=32)
        torch.manual_seed(args.seed + 11)
        prev_ref = sampler.denoise_apply_impl(x_t[None], 49, e_ref[None], False)[0]
        prev = pipe.scheduler.step(eps, t, x_t, eta=pipe.conventions.eta,
                                   generator=torch.Generator().manual_seed(args.seed + 11)).prev_sample
        report("one DDIM step (eta %.1f)" % pipe.conventions.eta, prev, prev_ref, log, per_view=True)
    return log


def _reference_source(path: Path, start: str, end: str) -> str:
    """Statements of a reference script from the line starting with ``start`` to the one with ``end``
    (run as they are: the script itself imports pytorch3d, carvekit and CUDA at top level)."""
    lines = path.read_text().splitlines()
    a = next(i for i, ln in enumerate(lines) if ln.strip().startswith(start))
    b = next(i for i, ln in enumerate(lines) if i >= a and end in ln)
    indent = len(lines[a]) - len(lines[a].lstrip())
    return "\n".join(ln[indent:] for ln in lines[a:b + 1])


def morphable(args) -> list:
    """What runs without spconv: the virtual cameras, the FLAME placement and the voxelisation,
    executed from the reference's generate_face.py, against our shipped conventions."""
    import ast

    from engine.multiview.diffusion.frames import CheckpointFrame
    from engine.multiview.diffusion.sparse_conv import voxelize
    from weights import conventions

    log: list = []
    script = Path(args.reference_dir) / "generate_face.py"
    tree = ast.parse(script.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_camera_trajectory")
    scope: dict = {"np": np}
    exec(compile(ast.Module([fn], []), str(script), "exec"), scope)
    positions, rotations = scope["generate_camera_trajectory"](16)
    from scipy.spatial.transform import Rotation as Rot

    ref_w2c = []
    for pos, rot in zip(positions, rotations):  # generate_face.main: R from euler 'xyz', t = −R·position
        r = Rot.from_euler("xyz", rot, True).as_matrix()
        ref_w2c.append(np.concatenate([r, -r @ np.asarray(pos).reshape(3, 1)], 1))
    conv = conventions.morphable()
    report("virtual cameras (w2c)", torch.tensor(np.array(conv.w2c)), torch.tensor(np.array(ref_w2c)), log)
    # FLAME placement + voxelisation, the reference's own statements on a FLAME-sized point set
    g = torch.Generator().manual_seed(args.seed)
    flame = (torch.rand(5023, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([0.16, 0.23, 0.2], dtype=torch.float64)
    code = _reference_source(script, "face_vertices *= 1.087", "out_sh = (out_sh | (x - 1)) + 1")
    so3 = lambda w: torch.as_tensor(conventions.rodrigues(w[0].numpy()), dtype=torch.float32)[None]  # pytorch3d's so3_exponential_map
    scope = {"torch": torch, "np": np, "face_vertices": flame.float().clone(), "so3_exponential_map": so3}
    exec(code, scope)
    center = np.zeros(3)  # the engine's FLAME subtracts its template centre: undo it with flame_center
    world = (flame.numpy() - center) @ conventions.FLAME_TO_WORLD.T
    ours = CheckpointFrame(conv, flame_center=center).points_to_checkpoint(world)
    report("prior placement (vertices)", torch.tensor(ours), scope["face_vertices"].double(), log)
    vox, origin, shape = voxelize(torch.tensor(ours, dtype=torch.float32), torch.zeros(len(ours), 1), conv.voxel_size,
                                  conv.voxelisation)
    ref_coord = {tuple(c) for c in scope["coord"].tolist()}
    ours_coord = {tuple(c[1:]) for c in vox.coords.tolist()}
    print(f"voxel grid: ours {shape}, reference out_sh {tuple(scope['out_sh'].tolist())}; voxels: ours {len(ours_coord)}, "
          f"reference {len(ref_coord)} distinct of {len(scope['coord'])}, in both {len(ours_coord & ref_coord)}")
    log.append(("voxel grid shape", 0.0 if shape == tuple(scope["out_sh"].tolist()) else 1.0))
    log.append(("voxel coordinates", 0.0 if ours_coord == ref_coord else 1.0))
    if not args.skip_model:
        log += _morphable_model(args, script, flame)
    return log


def _placed(script: Path, flame: torch.Tensor) -> dict:
    """generate_face.py's placement + voxelisation statements on ``flame``, dropping vertices that
    share a voxel (spconv leaves duplicates undefined) until none do."""
    code = _reference_source(script, "face_vertices *= 1.087", "out_sh = (out_sh | (x - 1)) + 1")
    from weights import conventions

    so3 = lambda w: torch.as_tensor(conventions.rodrigues(w[0].numpy()), dtype=torch.float32)[None]
    while True:
        scope = {"torch": torch, "np": np, "face_vertices": flame.float().clone(), "so3_exponential_map": so3}
        exec(code, scope)
        _, first = np.unique(scope["coord"].numpy(), axis=0, return_index=True)
        if len(first) == len(flame):
            return scope
        flame = flame[np.sort(first)]


def _morphable_model(args, script: Path, flame: torch.Tensor) -> list:
    from engine.multiview.diffusion import frames, load_pipeline

    log: list = []
    ref, module = _build_reference(Path(args.reference_dir), "morphable", args.channels, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load_pipeline(_convert(ref, "morphable", args.channels, Path(tmp) / "m"), "cpu", "fp32")
    scope = _placed(script, flame[:: max(1, len(flame) // args.vertices)])
    verts = scope["face_vertices"]
    conv = pipe.conventions
    targets = frames.CheckpointFrame(conv).checkpoint_cameras()
    K = np.eye(4)
    K[:3, :3] = [[conv.intrinsics[0], 0, conv.intrinsics[2]], [0, conv.intrinsics[1], conv.intrinsics[3]], [0, 0, 1]]
    batch = {"target_K": torch.tensor(np.stack([K] * 16), dtype=torch.float32)[None],
             "target_RT": torch.tensor(np.array(conv.w2c), dtype=torch.float32)[None],
             "vertices": verts[None], "out_sh": scope["out_sh"][None], "coord": scope["coord"][None],
             "bounds": torch.from_numpy(scope["bounds"])[None],
             "input_azimuth": torch.zeros(1, 1), "input_elevation": torch.zeros(1, 1),
             "target_azimuth": torch.zeros(1, 16), "target_elevation": torch.zeros(1, 16)}
    g = torch.Generator().manual_seed(args.seed)
    rgb = torch.rand(1, 3, 256, 256, generator=g)
    clip_embed = torch.randn(1, 768, generator=g)
    x_t = torch.randn(16, 4, 32, 32, generator=g)
    print(f"mesh: {len(verts)} vertices, grid {tuple(scope['out_sh'].tolist())}")
    torch.manual_seed(args.seed + 7)
    ref_lat = ref.encode_first_stage(rgb * 2 - 1, True)
    cond = pipe.prepare_conditions(rgb, targets[8], verts.numpy(), targets, clip_embed, "sample",
                                   torch.Generator().manual_seed(args.seed + 7))
    report("input latent (posterior sample)", cond.input_latent, ref_lat, log)
    v_ref = ref.get_viewpoint_embedding(batch)[0]
    report("view embedding", cond.v_embed, v_ref, log)
    pipe.scheduler.set_timesteps(50)
    t = int(pipe.scheduler.timesteps[0])
    ts = torch.full((1,), t, dtype=torch.long)
    t_emb_ref = ref.embed_time(ts)
    vol_ref = ref.spatial_volume.construct_spatial_volume(x_t[None], t_emb_ref, v_ref[None], batch)
    cm = pipe.conditioner
    vol = cm.build_volume(x_t, cm.embed_time(ts), cond.v_embed, cond.c2w, cond.intr, 256, cond.vertices, 4)
    report("mesh volume", vol, vol_ref, log)
    e_ref = []
    for i in range(0, 16, 4):
        idx = torch.arange(i, i + 4)[None]
        c_, f_, x_ = ref.get_target_view_feats(ref_lat, vol_ref, clip_embed[:, None], t_emb_ref, v_ref[None], idx, batch)
        e_ref.append(ref.model.predict_with_unconditional_scale(x_t[i:i + 4], ts.repeat(4), c_, f_, x_, args.guidance))
    e_ref = torch.cat(e_ref)
    eps = pipe.predict_noise(x_t, t, cond, args.guidance, 4)
    report("predicted noise (CFG %.1f)" % args.guidance, eps, e_ref, log, per_view=True)
    sampler = module.SyncDDIMSampler(ref, 50, "uniform", 1.0, latent_size=32)
    torch.manual_seed(args.seed + 11)
    prev_ref = sampler.denoise_apply_impl(x_t[None], 49, e_ref[None], False)[0]
    prev = pipe.scheduler.step(eps, t, x_t, eta=conv.eta, generator=torch.Generator().manual_seed(args.seed + 11)).prev_sample
    report("one DDIM step (eta %.1f)" % conv.eta, prev, prev_ref, log, per_view=True)
    return log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-dir", required=True, help="checkout of the reference repository")
    ap.add_argument("--family", required=True, choices=["syncdreamer", "morphable"])
    ap.add_argument("--channels", type=int, default=32, help="UNet model_channels (SD: 320; shrunk: 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=2.0, help="CFG scale (SyncDreamer's default 2.0)")
    ap.add_argument("--input-elevation", type=float, default=30.0, help="elevation of the input view, degrees")
    ap.add_argument("--vertices", type=int, default=1500, help="Morphable: mesh vertices fed to both models")
    ap.add_argument("--skip-model", action="store_true", help="Morphable: compare cameras/placement/voxels only")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    log = (syncdreamer if args.family == "syncdreamer" else morphable)(args)
    first = next((name for name, r in log if r > THRESHOLD), None)
    print(f"first diverging intermediate: {first or 'none'} (threshold ‖Δ‖/‖ref‖ > {THRESHOLD:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
