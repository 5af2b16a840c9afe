"""``MultiViewPipeline``: joint DDIM over N target views of a head (Gen3D-Face §3.2).

Reads like diffusers' ``StableDiffusionPipeline.__call__``: numbered steps, the scheduler
apart, ``callback_on_step_end`` after every step (progress, cancel). Components:
``unet`` (diffusers UNet2DConditionModel, in_channels 8), ``vae`` (AutoencoderKL),
``scheduler`` (DDIMScheduler), ``conditioner`` (volumes + depth attention + view context)
and, optionally, ``image_encoder`` (CLIP; without it pass ``image_embeds``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from recon.cameras import Camera
from weights.conventions import Conventions
from weights.conventions import gen3dface as gen3dface_conventions

from . import clip, frames, geometry
from .attention import MultiViewAttnProcessor
from .conditioner import MultiViewConditioner
from .unet import install_processors, unet_forward

log = logging.getLogger(__name__)


@dataclass
class MultiViewOutput:
    """images: [N, size, size, 4] uint8 RGBA (None for output_type="latent"); latents: [N, 4, r, r]."""

    images: np.ndarray | None
    cameras: list[Camera]
    latents: torch.Tensor
    interrupted: bool = False


@dataclass
class _Conditions:
    """Everything fixed during the loop (step 3)."""

    input_latent: torch.Tensor  # [1, 4, r, r] scaled
    context: torch.Tensor  # [S, 1, context_dim]
    v_embed: torch.Tensor  # [S, 4]: targets, then the input view
    c2w: torch.Tensor  # [S, 4, 4]
    intr: torch.Tensor  # [S, 4]
    vertices: torch.Tensor | None  # [P, 3]
    n_targets: int
    frustum_points: torch.Tensor | None = None  # [S, D, r, r, 3]: fixed by the cameras, reused every step
    references: torch.Tensor | None = None  # [R, 4, r, r] scaled latents of the extra reference photos


class MultiViewPipeline:
    """Joint multi-view denoiser. Build with ``load_pipeline`` or from components."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler,
                 conditioner: MultiViewConditioner, image_encoder: torch.nn.Module | None = None, image_size: int = 256,
                 conventions: Conventions | None = None):
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.conditioner, self.image_encoder, self.image_size = conditioner, image_encoder, image_size
        cfg = conditioner.config
        #: the checkpoint family's conventions (weights/conventions.py); our own models' by default
        self.conventions = conventions or gen3dface_conventions(
            cfg.volume_length, cfg.frustum_length, cfg.voxel_size, image_size=image_size)
        self.processor = MultiViewAttnProcessor(cfg.joint_attention, cfg.joint_attention_max_tokens)
        install_processors(unet, self.processor, getattr(conditioner, "joint_gates", None))
        self._interrupt = False
        for m in self.modules():
            m.eval().requires_grad_(False)

    # -- diffusers-like plumbing ------------------------------------------------------------
    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.conditioner, self.image_encoder) if m is not None]

    def to(self, device=None, dtype=None) -> "MultiViewPipeline":
        for m in self.modules():
            m.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def enable_attention_slicing(self, slice_size: int | None = 1024) -> None:
        """Bound attention memory: at most ``slice_size`` queries per SDPA call."""
        self.processor.slice_size = slice_size

    # -- steps ------------------------------------------------------------------------------
    def check_inputs(self, image, vertices, faces, target_cameras) -> None:
        """Shapes and values; raises ValueError (the engine names the file)."""
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 8:
            raise ValueError(f"crop must be [h, w, 3|4], got {arr.shape}")
        v = np.asarray(vertices)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or not np.all(np.isfinite(v)):
            raise ValueError(f"prior vertices must be finite [V, 3], got {v.shape}")
        f = np.asarray(faces)
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
            raise ValueError("prior faces must be [F, 3] indices into the vertices")
        if not target_cameras:
            raise ValueError("no target cameras")
        n = self.conditioner.config.n_views
        if self.conditioner.config.use_spatial_volume and len(target_cameras) != n:
            raise ValueError(f"this model's spatial volume was built for {n} views, got {len(target_cameras)}")

    def preprocess(self, image) -> torch.Tensor:
        """Crop RGBA uint8/float [h, w, 3|4] → RGB on white [1, 3, size, size] in [0, 1]."""
        arr = np.asarray(image)
        x = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
        x = x.permute(2, 0, 1)[None].clamp(0, 1)
        if x.shape[1] == 4:  # SyncDreamer's inputs sit on a white background
            x = x[:, :3] * x[:, 3:] + (1 - x[:, 3:])
        size = self.image_size
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    def encode_input(self, rgb: torch.Tensor, image_embeds: torch.Tensor | None, input_latent: str = "mode",
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP embedding [clip_dim], scaled VAE latent [1, 4, r, r]) of the input.

        input_latent: the VAE posterior's ``mode`` or a ``sample`` drawn from ``generator``
        (the references sample, ``encode_first_stage(x, sample=True)``).
        """
        rgb = rgb.to(self.device, self.dtype)
        if image_embeds is None:
            if self.image_encoder is None:
                raise ValueError("no image encoder in this model: pass image_embeds")
            image_embeds = clip.encode(self.image_encoder, rgb, self.conventions.clip_resize)
        dist = self.vae.encode(rgb * 2 - 1).latent_dist
        z = dist.sample(generator) if input_latent == "sample" else dist.mode()
        return image_embeds.reshape(-1).to(self.device, self.dtype), z * self.vae.config.scaling_factor

    def prepare_conditions(self, rgb, input_camera, vertices, target_cameras, image_embeds,
                           input_latent: str = "mode", generator=None, identity=None, references=None) -> _Conditions:
        """Cameras, vertices: in the checkpoint's frame (``frames.CheckpointFrame``), true intrinsics;
        the family's pixel convention is applied here, to the network's copy only. identity: the input's
        face descriptor (identity token; None: none found); references: [(RGB [1, 3, size, size], Camera)]."""
        cfg, size = self.conditioner.config, self.image_size
        clip_embed, latent = self.encode_input(rgb, image_embeds, input_latent, generator)
        targets = [c if c.w == size else c.resized(size, size) for c in target_cameras]
        ref = input_camera.resized(size, size)
        refs = [c.resized(size, size) for _, c in references or []] if cfg.include_input_view else []
        views = targets + ([ref] if cfg.include_input_view else []) + refs
        emb = frames.view_embeddings(self.conventions, targets, ref, cfg.elevation_sign, cfg.azimuth_sign)
        if cfg.include_input_view:  # the input seen from itself: Δ = 0, i.e. (0, 0, 1, 0) unless constant
            own = self.conventions.view_embedding_constant if self.conventions.view_embedding == "constant" else (0.0, 0.0, 1.0, 0.0)
            emb = torch.cat([emb, torch.tensor([own], dtype=emb.dtype)])
        ref_latents = None
        if refs:  # multi_reference (seed 001): clean latents after the input view, relative view embeddings
            emb = torch.cat([emb, geometry.view_embedding(refs, ref, cfg.elevation_sign, cfg.azimuth_sign).to(emb.dtype)])
            ref_latents = torch.cat([self.encode_input(r, clip_embed, "mode")[1] for r, _ in references])
        v_embed = emb.to(self.device)
        c2w, intr = geometry.camera_tensors(views, self.device)
        intr[:, 2:] += frames.pixel_offset(self.conventions, size, self.conditioner.latent)
        verts = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=self.device) if cfg.use_mesh_volume else None
        ident = None if identity is None else torch.as_tensor(np.asarray(identity), dtype=self.dtype, device=self.device)
        context = self.conditioner.context(clip_embed, v_embed.to(self.dtype), ident)
        points = self.conditioner.frustum_points(c2w, intr, size)
        return _Conditions(latent, context, v_embed, c2w, intr, verts, len(targets), points, ref_latents)

    def predict_noise(self, latents, t, cond: _Conditions, guidance_scale: float, chunk: int) -> torch.Tensor:
        """One joint noise prediction for all target views, with classifier-free guidance.

        latents: [N, 4, r, r] → [N, 4, r, r]. The unconditional branch zeroes the context,
        the volume and the concatenated latent (SyncDreamer's ``predict_with_unconditional_scale``).
        """
        cm, n, size = self.conditioner, cond.n_targets, self.image_size
        t_target = torch.full((n,), int(t), device=self.device)
        t_views = torch.cat([t_target, torch.zeros(cond.c2w.shape[0] - n, dtype=torch.long, device=self.device)])
        t_emb = cm.embed_time(t_views)
        volume = cm.build_volume(latents, t_emb[:1], cond.v_embed[:n], cond.c2w[:n], cond.intr[:n], size, cond.vertices, chunk)
        frustum = cm.frustum_features(volume, t_emb, cond.v_embed, cond.c2w, cond.intr, size, chunk, cond.frustum_points)
        s = cond.c2w.shape[0]
        refs = [] if cond.references is None else [cond.references]
        n_inputs = s - n - sum(r.shape[0] for r in refs)
        sample = torch.cat([latents, cond.input_latent.expand(n_inputs, -1, -1, -1)] + refs)
        scale = self.vae.config.scaling_factor if cm.config.concat_unscaled else 1.0
        concat = (cond.input_latent / scale).expand(s, -1, -1, -1)
        x = torch.cat([sample, concat], 1)
        n_refs = s - n  # the input view and the references (causal_reference: they see only each other)
        if guidance_scale == 1.0:
            return unet_forward(self.unet, cm, x, t_views, cond.context, frustum, s, n_refs)[:n]
        x_uncond = torch.cat([torch.cat([latents, torch.zeros_like(sample[n:])]), torch.zeros_like(concat)], 1)
        # the frustum features cover the conditional half only: the depth blocks give the rest
        # a zero volume without running it through D·r² samples (DepthTransformer.forward)
        both = unet_forward(
            self.unet, cm, torch.cat([x, x_uncond]), torch.cat([t_views, t_views]),
            torch.cat([cond.context, torch.zeros_like(cond.context)]), frustum, s, n_refs,
        )
        eps, eps_uncond = both[:n], both[s:s + n]
        return eps_uncond + guidance_scale * (eps - eps_uncond)

    def decode(self, latents: torch.Tensor, chunk: int) -> torch.Tensor:
        """[N, 4, r, r] → RGB [N, 3, size, size] in [0, 1], ``chunk`` views at a time."""
        out = [self.vae.decode(latents[i:i + chunk] / self.vae.config.scaling_factor).sample for i in range(0, len(latents), chunk)]
        return (torch.cat(out).float() * 0.5 + 0.5).clamp(0, 1)

    def alpha(self, rgb: np.ndarray, vertices, faces, cameras: list[Camera], mode: str) -> np.ndarray:
        """Alpha [N, size, size] in [0, 1]: the prior's silhouette ("mesh", dilated for hair),
        the non-white pixels ("background") or their union ("both")."""
        size = self.image_size
        masks = []
        for img, cam in zip(rgb, cameras):
            m = np.zeros((size, size), np.float32)
            if mode in ("mesh", "both"):
                m = geometry.silhouette(vertices, faces, cam.resized(size, size), dilate_px=max(1, size // 32))
            if mode in ("background", "both"):
                m = np.maximum(m, (img.min(-1) < 0.94).astype(np.float32))
            masks.append(m)
        return np.stack(masks)

    @torch.no_grad()
    def __call__(
        self,
        image,
        input_camera: Camera,
        vertices,
        faces,
        target_cameras: list[Camera],
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
        eta: float | None = None,
        input_latent: str | None = None,
        latents: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        identity=None,
        references: list | None = None,
        views_per_chunk: int = 4,
        alpha: str = "mesh",
        output_type: str = "np",
        callback_on_step_end: Callable | None = None,
    ) -> MultiViewOutput:
        # 1. Check inputs
        self.check_inputs(image, vertices, faces, target_cameras)
        if alpha not in ("mesh", "background", "both"):
            raise ValueError(f"alpha must be mesh|background|both, got {alpha!r}")
        self._interrupt = False
        chunk = max(1, int(views_per_chunk))
        # 2. Preprocess the crop (RGB on white, size²)
        rgb = self.preprocess(image)
        # 3. Encode the input and fix the per-view conditions (CLIP ⊕ view context, cameras, mesh);
        #    sampler defaults are the family's (weights/conventions.py): the references use η = 1 and
        #    a posterior sample, drawn from ``generator`` before the initial noise, as they do
        eta = self.conventions.eta if eta is None else float(eta)
        input_latent = input_latent or self.conventions.input_latent
        if input_latent not in ("mode", "sample"):
            raise ValueError(f"input_latent must be mode|sample, got {input_latent!r}")
        # identity: the input's face descriptor [identity_dim] (identity token; None: no face, zeros);
        # references: [(crop, Camera)] further photos of the person (models trained with multi_reference)
        refs = [(self.preprocess(img), cam) for img, cam in references or []]
        cond = self.prepare_conditions(rgb, input_camera, vertices, target_cameras, image_embeds, input_latent, generator,
                                       identity, refs)
        # 4. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        # 5. Prepare latent variables: one noise map per target view
        r = self.image_size // self.vae_scale_factor
        shape = (cond.n_targets, 4, r, r)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must be {shape}, got {tuple(latents.shape)}")
        latents = latents.to(self.device, self.dtype) * self.scheduler.init_noise_sigma
        # 6. Denoising loop: every view in one joint pass per step
        for i, t in enumerate(timesteps):
            if self.interrupt:
                break
            noise = self.predict_noise(latents, t, cond, guidance_scale, chunk)
            # the references add no noise at the last step (SyncDDIMSampler: is_step0)
            last = torch.zeros_like(latents) if (eta > 0 and i == len(timesteps) - 1) else None
            latents = self.scheduler.step(noise, t, latents, eta=eta, generator=None if last is not None else generator,
                                          variance_noise=last).prev_sample
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = out.get("latents", latents)
        if output_type == "latent":
            return MultiViewOutput(None, list(target_cameras), latents, self.interrupt)
        # 7. Decode, chunk by chunk
        images = self.decode(latents, chunk).permute(0, 2, 3, 1).cpu().numpy()
        # 8. Alpha from the prior's silhouette and/or the background
        a = self.alpha(images, np.asarray(vertices), np.asarray(faces), target_cameras, alpha)
        rgba = np.concatenate([images, a[..., None]], -1)
        size = self.image_size
        cams = [c if c.w == size else c.resized(size, size) for c in target_cameras]
        return MultiViewOutput((rgba * 255 + 0.5).astype(np.uint8), cams, latents, self.interrupt)
