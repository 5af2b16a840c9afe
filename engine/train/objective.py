"""The denoising objective of the joint multi-view model (SyncDreamer / Gen3D-Face §3.2).

Per sample: the target views' latents x0 [N, 4, r, r] are noised to one timestep t
(every target of a sample shares t, as in SyncDreamer), the conditions are built exactly as
the inference pipeline builds them (``MultiViewPipeline.prepare_conditions`` / ``predict_noise``:
CLIP ⊕ view context, the clean input latent as an extra view and concatenated to every row,
the mesh volume from the noisy targets) and the UNet predicts the noise of all views in one
joint pass; the loss is the MSE on the target rows. Condition dropout (CFG) drops a sample's
context, input latent and volume together — the pipeline's unconditional branch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.multiview.diffusion import clip, geometry
from engine.multiview.diffusion.pipeline import MultiViewPipeline
from engine.multiview.diffusion.unet import unet_forward

from .data import Sample


@dataclass
class Frozen:
    """The parts that are not trained (VAE, CLIP, scheduler): kept outside the DDP module."""

    pipe: MultiViewPipeline


class TrainModel(nn.Module):
    """The trainable parts (UNet + conditioner + conditioning extras) with the loss as ``forward``."""

    def __init__(self, pipe: MultiViewPipeline, extras: nn.Module | None = None, views_per_chunk: int = 4,
                 frontal_clip: bool = False, reference_mask: float = 0.5):
        super().__init__()
        self.unet, self.conditioner = pipe.unet, pipe.conditioner
        self.extras = extras if extras is not None else nn.Module()
        self.frozen = Frozen(pipe)  # a dataclass, not a submodule: DDP never sees the VAE
        self.chunk = views_per_chunk
        self.frontal_clip, self.reference_mask = frontal_clip, reference_mask

    def forward(self, samples: list[Sample], cond_dropout: float = 0.0, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """Mean denoising loss over ``samples`` (every target pixel weighs the same). timesteps: [B] fixed t (evaluation)."""
        rows = [self._rows(s, cond_dropout, None if timesteps is None else int(timesteps[i])) for i, s in enumerate(samples)]
        order = sorted(range(len(rows)), key=lambda i: rows[i]["dropped"])  # kept samples first: their volume rows
        rows = [rows[i] for i in order]
        s_views = rows[0]["x"].shape[0]
        kept = [r for r in rows if not r["dropped"]]
        frustum = {k: torch.cat([r["frustum"][k] for r in kept]) for k in kept[0]["frustum"]} if kept else \
            _zero_levels(self.conditioner, x_dtype=rows[0]["x"].dtype)
        x = torch.cat([r["x"] for r in rows])
        t = torch.cat([r["t"] for r in rows])
        ctx = torch.cat([r["context"] for r in rows])
        eps = unet_forward(self.unet, self.conditioner, x, t, ctx, frustum, s_views, rows[0]["n_refs"])
        n = rows[0]["noise"].shape[0]
        pred = eps.reshape(len(rows), s_views, *eps.shape[1:])[:, :n]
        target = torch.stack([r["noise"] for r in rows])
        return F.mse_loss(pred.float(), target.float())

    @torch.no_grad()
    def _encode(self, rgb: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        vae = self.frozen.pipe.vae
        dist = vae.encode((rgb * 2 - 1).to(vae.device, vae.dtype)).latent_dist
        z = dist.mode() if generator is None else dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
        return z * vae.config.scaling_factor

    def _rows(self, s: Sample, cond_dropout: float, fixed_t: int | None) -> dict:
        """One sample's UNet rows [S, 8, r, r], timesteps, context, frustum features and true noise."""
        pipe, cm = self.frozen.pipe, self.conditioner
        cfg, size, dev = cm.config, pipe.image_size, self.unet.device
        g = s.generator
        x0 = self._encode(s.targets, g)  # [N, 4, r, r]
        input_latent = self._encode(s.input_rgb[None], None)  # the pipeline encodes the input by its mode
        n = x0.shape[0]
        t = int(torch.randint(0, pipe.scheduler.config.num_train_timesteps, (1,), generator=g)) if fixed_t is None else fixed_t
        noise = torch.randn(x0.shape, generator=g).to(x0)
        dropped = bool(torch.rand(1, generator=g) < cond_dropout)
        x_t = pipe.scheduler.add_noise(x0, noise, torch.full((n,), t, dtype=torch.long))
        views = s.target_cameras + ([s.input_camera] if cfg.include_input_view else [])
        refs = self._references(s) if cfg.include_input_view else None
        if refs is not None:  # multi_reference (seed 001): more clean views after the input, region-masked
            views = views + s.reference_cameras
        v_embed = geometry.view_embedding(views, s.input_camera, cfg.elevation_sign, cfg.azimuth_sign).to(dev)
        c2w, intr = geometry.camera_tensors(views, dev)
        n_all = len(views)
        t_views = torch.cat([torch.full((n,), t), torch.zeros(n_all - n, dtype=torch.long)]).to(dev)
        # frontal_clip (seed 002): one view-invariant embedding, the item's frontal view, for every target
        clip_embed = self._clip(s.frontal_rgb if self.frontal_clip and s.frontal_rgb is not None else s.input_rgb)
        context = cm.context(clip_embed, v_embed.to(x0.dtype), s.identity)  # + the identity token, if the model has it
        scale = pipe.vae.config.scaling_factor if cfg.concat_unscaled else 1.0
        clean = input_latent.expand(int(cfg.include_input_view), -1, -1, -1)
        sample = torch.cat([x_t, clean] + ([refs] if refs is not None else []))
        concat = (input_latent / scale).expand(n_all, -1, -1, -1)
        frustum = None
        if dropped:
            context = torch.zeros_like(context)
            sample = torch.cat([x_t, torch.zeros_like(sample[n:])])
            concat = torch.zeros_like(concat)
        else:
            t_emb = cm.embed_time(t_views)
            verts = s.vertices.to(dev) if cfg.use_mesh_volume else None
            volume = cm.build_volume(x_t, t_emb[:1], v_embed[:n], c2w[:n], intr[:n], size, verts, self.chunk)
            frustum = cm.frustum_features(volume, t_emb, v_embed, c2w, intr, size, self.chunk)
        n_refs = n_all - n
        return {"x": torch.cat([sample, concat], 1), "t": t_views, "context": context, "frustum": frustum,
                "noise": noise, "dropped": dropped, "n_refs": n_refs}

    def _references(self, s: Sample) -> torch.Tensor | None:
        """Clean latents [R, 4, r, r] of the extra reference views, each with a random rectangle zeroed
        (region masking, Mv2ID: the model must gather identity from several views, not copy one)."""
        if s.references is None:
            return None
        z = self._encode(s.references, None)
        r = z.shape[-1]
        for i in range(z.shape[0]):
            side = max(1, int(round(float(torch.rand(1, generator=s.generator)) * self.reference_mask * r)))
            y0, x0 = (int(v) for v in torch.randint(0, r - side + 1, (2,), generator=s.generator))
            z[i, :, y0:y0 + side, x0:x0 + side] = 0
        return z

    @torch.no_grad()
    def _clip(self, rgb: torch.Tensor) -> torch.Tensor:
        pipe = self.frozen.pipe
        if pipe.image_encoder is None:  # no encoder in the folder: a zero embedding (documented)
            return torch.zeros(self.conditioner.config.clip_dim, device=self.unet.device, dtype=self.unet.dtype)
        return clip.encode(pipe.image_encoder, rgb[None].to(pipe.device, pipe.dtype)).reshape(-1)


def _zero_levels(cm, x_dtype) -> dict:
    """Frustum features of no rows (every sample dropped): {width: [0, C, 1, w, w]}; the depth
    blocks then give every row the zero volume (``DepthTransformer.forward``)."""
    p = next(cm.parameters())
    return {cm.latent >> k: p.new_zeros(0, d, 1, cm.latent >> k, cm.latent >> k, dtype=x_dtype)
            for k, d in enumerate(cm.config.frustum_dims)}
