"""The training loop on accelerate: one CPU, one GPU, many GPUs/nodes (``accelerate launch``).

Each optimiser step reads ``batch_size · grad_accum`` samples of the deterministic stream
(``data.TrainSet``): micro-batch m of step k holds sample numbers
(k·grad_accum + m)·batch_size + [0, batch_size), split evenly over the processes. The
scheduler is stepped once per optimiser step by this loop (not by accelerate, which would
step it once per process).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.context import RunContext

from . import state as ckpt
from .config import TrainConfig
from .data import TrainSet
from .ema import EMA
from .objective import TrainModel

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run did: final step, last loss, the newest checkpoint, seconds per step."""

    step: int
    loss: float
    checkpoint: Path | None
    seconds_per_step: float
    losses: list[float]


def build_pipeline(cfg: TrainConfig, device="cpu"):
    """The model to train: a model folder (``cfg.init``) or a new one (tiny / full size)."""
    from engine.multiview.diffusion import load_pipeline
    from engine.multiview.diffusion import presets

    if cfg.init:
        pipe = load_pipeline(cfg.init, device, "fp32")
    elif cfg.model == "tiny":
        pipe = presets.tiny_pipeline(seed=cfg.seed, n_views=cfg.n_targets, size=cfg.image_size)
    else:
        pipe = presets.full_pipeline(n_views=cfg.n_targets, size=cfg.image_size)
    import dataclasses

    if cfg.joint_attention is not None:
        pipe.processor.joint = bool(cfg.joint_attention)
        pipe.conditioner.config = dataclasses.replace(pipe.conditioner.config, joint_attention=bool(cfg.joint_attention))
    if cfg.gate_joint_attention and not pipe.conditioner.config.joint_gate_layers:
        _add_joint_gates(pipe)
    if "causal_reference" in cfg.conditioning:  # a model property: saved in conditioner/config.json
        pipe.conditioner.config = dataclasses.replace(pipe.conditioner.config, causal_reference=True)
    if "multi_reference" in cfg.conditioning:  # generate takes this many further photos (conditioner/config.json)
        pipe.conditioner.config = dataclasses.replace(pipe.conditioner.config, n_references=cfg.n_references)
    if "identity_token" in cfg.conditioning and not pipe.conditioner.config.identity_dim:
        _add_identity_token(pipe)
    _own_conventions(pipe)
    return pipe.to(device=device)


def _add_joint_gates(pipe) -> None:
    """New zero gates on joint attention: a converted per-view model starts exactly as it was."""
    import dataclasses

    from engine.multiview.diffusion.unet import install_processors, self_attention_layers

    n = len(self_attention_layers(pipe.unet))
    cond = pipe.conditioner
    cond.config = dataclasses.replace(cond.config, joint_gate_layers=n)
    p = next(cond.parameters())
    cond.joint_gates = torch.nn.Parameter(torch.zeros(n, device=p.device, dtype=p.dtype))
    install_processors(pipe.unet, pipe.processor, cond.joint_gates)


def _add_identity_token(pipe) -> None:
    """The identity token's projection, zero: a converted model starts exactly as it was."""
    import dataclasses

    from engine.multiview.diffusion.conditioner import identity_projection
    from engine.multiview.diffusion.identity import IDENTITY_DIM

    cond = pipe.conditioner
    cond.config = dataclasses.replace(cond.config, identity_dim=IDENTITY_DIM)
    p = next(cond.parameters())
    cond.identity_projection = identity_projection(IDENTITY_DIM, cond.config.context_dim).to(p.device, p.dtype)


def _own_conventions(pipe) -> None:
    """A trained model is ours: the engine's world and the paper's 360° layout (weights/conventions.py,
    when present), whatever family it was initialised from; its folder then says so."""
    try:
        from weights.conventions import gen3dface
    except ImportError:  # model folders without conventions.json (before that module)
        return
    import dataclasses

    c = pipe.conditioner.config
    conv = gen3dface(c.volume_length, c.frustum_length, c.voxel_size, image_size=pipe.image_size)
    # the voxelisation rule is the network's (a Morphable start keeps its own): the loader checks they agree
    pipe.conventions = dataclasses.replace(conv, voxelisation=getattr(c, "voxelisation", conv.voxelisation))


def _param_groups(model: TrainModel, cfg: TrainConfig) -> list[dict]:
    unet = [p for p in model.unet.parameters() if p.requires_grad]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("unet.")]
    return [{"params": unet, "lr": cfg.unet_lr}, {"params": other, "lr": cfg.other_lr}]


def _accelerator(cfg: TrainConfig, out: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    tracker = cfg.tracker
    if tracker == "auto":
        import importlib.util

        tracker = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    return Accelerator(
        mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
        log_with=None if tracker == "none" else tracker,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # condition dropout (and the options) can leave modules without gradient in a step
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def train(dataset: Path, out: Path, cfg: TrainConfig, ctx: RunContext | None = None, resume: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Train from ``dataset`` into ``out`` (resuming from its newest checkpoint); ``stop_after``: stop
    after this many steps of this call (tests: a run "killed" between checkpoints)."""
    ctx = ctx or RunContext()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(cfg, out)
    pipe = build_pipeline(cfg, acc.device)
    model = TrainModel(pipe, views_per_chunk=cfg.views_per_chunk, frontal_clip="frontal_clip" in cfg.conditioning,
                       reference_mask=cfg.reference_mask)
    for m in (model.unet, model.conditioner, model.extras):
        m.train().requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    identity = "identity_token" in cfg.conditioning
    if identity:  # dlib once per identity, cached in the dataset (the main process writes it first)
        from engine.dataset.identity import ensure_identities

        with acc.main_process_first():
            ensure_identities(dataset, ctx)
    data = TrainSet(dataset, pipe.image_size, cfg.n_targets, cfg.seed, cfg.val_items,
                    n_references=cfg.n_references if "multi_reference" in cfg.conditioning else 0, identity=identity)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [cfg.unet_lr_factor, lambda s: 1.0])
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    step = 0
    last = ckpt.latest_checkpoint(out) if resume else None
    if last is not None:
        step = ckpt.load_checkpoint(last, model, optimizer, scheduler, ema)
        log.info("resumed from %s (step %d)", last, step)
    if cfg.batch_size % acc.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {acc.num_processes} processes")
    wrapped, optimizer = acc.prepare(model, optimizer)
    if acc.is_main_process and acc.log_with:
        acc.init_trackers("gen3dface_train", config={k: str(v) for k, v in cfg.to_dict().items()})
    per_proc = cfg.batch_size // acc.num_processes
    losses, t0, first = [], time.perf_counter(), step
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    while step < end:
        loss = _one_step(acc, wrapped, optimizer, data, cfg, step, per_proc)
        scheduler.step()
        step += 1
        if ema is not None:
            ema.update(model)
        losses.append(loss)
        if acc.log_with and step % cfg.log_every == 0:
            acc.log({"loss": loss, "lr_unet": scheduler.get_last_lr()[0], "lr_other": scheduler.get_last_lr()[1]}, step=step)
        if acc.is_main_process:
            ctx.progress(step, cfg.max_steps, f"step {step}/{cfg.max_steps} loss {loss:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            _checkpoint(acc, out, step, pipe, model, optimizer, scheduler, ema, cfg)
        if cfg.validate_every and step % cfg.validate_every == 0 and acc.is_main_process and data.val_ids:
            from .validate import contact_sheet

            contact_sheet(pipe, data, out / "validation" / f"step_{step:06d}.png", cfg)
    acc.wait_for_everyone()
    if acc.log_with:
        acc.end_training()
    spent = (time.perf_counter() - t0) / max(1, step - first)
    return TrainResult(step, losses[-1] if losses else math.nan, ckpt.latest_checkpoint(out), spent, losses)


def _one_step(acc, wrapped, optimizer, data: TrainSet, cfg: TrainConfig, step: int, per_proc: int) -> float:
    """One optimiser step (``grad_accum`` micro-batches); returns the mean loss over all processes."""
    total = 0.0
    for micro in range(cfg.grad_accum):
        base = (step * cfg.grad_accum + micro) * cfg.batch_size + acc.process_index * per_proc
        samples = [data.sample(base + j) for j in range(per_proc)]
        with acc.accumulate(wrapped):
            with acc.autocast():
                loss = wrapped(samples, cfg.cond_dropout)
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(wrapped.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        total += float(acc.reduce(loss.detach(), reduction="mean"))
    return total / cfg.grad_accum


def _checkpoint(acc, out, step, pipe, model, optimizer, scheduler, ema, cfg: TrainConfig) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        was = [m.training for m in (model.unet, model.conditioner)]
        ckpt.save_checkpoint(out, step, pipe, model, opt, scheduler, ema, cfg.to_dict(), cfg.keep_checkpoints)
        for m, t in zip((model.unet, model.conditioner), was):
            m.train(t)
    acc.wait_for_everyone()
