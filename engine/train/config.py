"""The training configuration: the paper's recipe as defaults (Gen3D-Face §4 "Implementation")."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


#: The conditioning options a config may name (``TrainConfig.conditioning``).
CONDITIONING = ("frontal_clip", "causal_reference", "multi_reference", "identity_token")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's: AdamW, batch 8, 48k iterations, UNet LR warmed
    1e-6 → 5e-5 over 100 steps, 5e-4 for every other trainable module, 16 target views."""

    model: str = "full"
    """Architecture when not initialised from a folder: full (SD-1.5 size) or tiny (CPU tests)."""
    init: str | None = None
    """A converted model folder (SyncDreamer / Morphable / ours) to start from; None: from scratch."""
    image_size: int = 256
    """View size the model works at, pixels (from scratch only; a folder has its own)."""
    n_targets: int = 16
    """Target views per sample, drawn from the item's views other than the input view."""
    batch_size: int = 8
    """Samples per optimiser step over all processes (each process takes batch_size / processes)."""
    grad_accum: int = 1
    """Gradient accumulation: micro-batches per optimiser step (the batch above is per micro-batch)."""
    max_steps: int = 48000
    """Optimiser steps."""
    unet_lr: float = 5e-5
    """UNet learning rate after warm-up."""
    unet_lr_start: float = 1e-6
    """UNet learning rate at step 0."""
    warmup_steps: int = 100
    """Linear warm-up of the UNet learning rate."""
    other_lr: float = 5e-4
    """Learning rate of every other trainable module (volume nets, depth attention, projections)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""
    mixed_precision: str = "no"
    """no, bf16 or fp16 (accelerate's autocast; fp16 needs a GPU)."""
    gradient_checkpointing: bool = False
    """Recompute the UNet's down/mid blocks in backward (diffusers' checkpointing) to save memory."""
    ema_decay: float = 0.0
    """EMA of the trainable weights (0: off); checkpoints then hold the EMA weights."""
    cond_dropout: float = 0.05
    """Probability that a sample's conditions (CLIP context, input latent, volume) are dropped, for CFG."""
    seed: int = 0
    """Seed of the data order, target views, timesteps, noise and dropout (per sample)."""
    val_items: int = 1
    """The last N dataset items are held out for validation (never trained on)."""
    checkpoint_every: int = 1000
    """Write a checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk (oldest removed first)."""
    validate_every: int = 1000
    """Contact sheet of generated views for the held-out items every N steps (0: never)."""
    val_steps: int = 20
    """DDIM steps of the validation sampling."""
    log_every: int = 10
    """Loss logged to the trackers every N steps."""
    tracker: str = "auto"
    """auto (TensorBoard if installed), tensorboard, none."""
    joint_attention: bool | None = None
    """Override the model's joint attention (None: keep; Gen3D-Face: on)."""
    gate_joint_attention: bool = False
    """Start joint attention as a no-op: per-layer gates at zero (for a converted per-view model, ``init``)."""
    conditioning: tuple[str, ...] = ()
    """Conditioning options (docs/training.md): frontal_clip (seed 002: the CLIP embedding of the item's
    most frontal view, shared by every target), causal_reference (seed 003: the input view attends only to
    itself), multi_reference (seed 001: extra reference views in the joint attention, region-masked),
    identity_token (seed 000: the input crop's dlib face descriptor, projected by a zero-initialised layer,
    as one more cross-attention context token of every view; cached in the dataset)."""
    n_references: int = 2
    """multi_reference: reference views per sample besides the input (drawn from the non-target views)."""
    reference_mask: float = 0.5
    """multi_reference: each reference loses a random rectangle of up to this fraction of its side (latent)."""
    views_per_chunk: int = 4
    """Views processed at once by the per-view volume parts."""

    def __post_init__(self):
        if self.model not in ("full", "tiny"):
            raise ValueError(f"model must be full|tiny, got {self.model!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no|bf16|fp16, got {self.mixed_precision!r}")
        if self.tracker not in ("auto", "tensorboard", "none"):
            raise ValueError(f"tracker must be auto|tensorboard|none, got {self.tracker!r}")
        if min(self.batch_size, self.grad_accum, self.max_steps, self.n_targets, self.checkpoint_every) < 1:
            raise ValueError("batch_size, grad_accum, max_steps, n_targets and checkpoint_every must be ≥ 1")
        unknown = sorted(set(self.conditioning) - set(CONDITIONING))
        if unknown:
            raise ValueError(f"unknown conditioning option(s) {', '.join(unknown)}; known: {', '.join(CONDITIONING)}")
        if not 0 <= self.cond_dropout <= 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("cond_dropout must be in [0, 1] and ema_decay in [0, 1)")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Unknown keys are an error (a typo must not fall back to a default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def unet_lr_factor(self, step: int) -> float:
        """The UNet's LR at ``step`` as a factor of ``unet_lr`` (linear warm-up, then constant)."""
        if step >= self.warmup_steps:
            return 1.0
        lr = self.unet_lr_start + (self.unet_lr - self.unet_lr_start) * step / max(1, self.warmup_steps)
        return lr / self.unet_lr
