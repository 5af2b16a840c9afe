"""Checkpoints: a model folder ``generate --weights`` loads, plus the exact training state.

    <out>/checkpoints/step_000100/               model_index.json, unet/, vae/, conditioner/, … (weights/ format)
    <out>/checkpoints/step_000100/training/      state.json (step, config, scheduler, optimiser layout),
                                                 optimizer.safetensors, trainable.safetensors (raw weights),
                                                 ema.safetensors (if EMA), rng.safetensors
    <out>/checkpoints/latest.json                {"step": 100, "path": "step_000100"} (replaced atomically)

Safetensors and JSON only (no pickles, DESIGN.md). A checkpoint is written under a
temporary name, then renamed, then ``latest.json`` is replaced: a kill at any moment
leaves the previous checkpoint complete and ``latest.json`` pointing at a complete one.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from weights.safeload import load_safetensors, save_safetensors

log = logging.getLogger(__name__)

LATEST = "latest.json"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, layout: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(layout["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": layout["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state()}


def save_checkpoint(root: Path, step: int, pipe, trainable: torch.nn.Module, optimizer, scheduler, ema,
                    config: dict, keep: int = 3) -> Path:
    """Write ``root/checkpoints/step_XXXXXX`` atomically; returns its path."""
    from engine.multiview.diffusion import save_pretrained

    ckdir = Path(root) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=ckdir))
    try:
        raw = {k: v.detach().cpu().clone() for k, v in trainable.state_dict().items()}
        if ema is not None:
            ema.copy_to(trainable)  # the model folder holds the EMA weights
        try:
            save_pretrained(pipe, tmp)
        finally:
            if ema is not None:
                trainable.load_state_dict(raw)
        tr = tmp / "training"
        tr.mkdir()
        opt_t, opt_layout = _flatten_optimizer(optimizer)
        save_safetensors(opt_t, tr / "optimizer.safetensors")
        save_safetensors(raw, tr / "trainable.safetensors")
        if ema is not None:
            save_safetensors(ema.state_dict(), tr / "ema.safetensors")
        save_safetensors(rng_state(), tr / "rng.safetensors")
        state = {"step": step, "config": config, "scheduler": scheduler.state_dict(), "optimizer": opt_layout}
        (tr / "state.json").write_text(json.dumps(state, indent=1, default=str))
        final = ckdir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    pointer = ckdir / (LATEST + ".tmp")
    pointer.write_text(json.dumps({"step": step, "path": name}))
    os.replace(pointer, ckdir / LATEST)
    _prune(ckdir, keep, name)
    return final


def _prune(ckdir: Path, keep: int, current: str) -> None:
    done = sorted(p for p in ckdir.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root/checkpoints`` (None: none yet).

    ``latest.json`` first; when it is missing or points at something incomplete, the newest
    ``step_*`` folder holding ``training/state.json``. Half-written temporaries are removed.
    """
    ckdir = Path(root) / "checkpoints"
    if not ckdir.is_dir():
        return None
    for stale in ckdir.glob(".step_*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        ptr = json.loads((ckdir / LATEST).read_text())
        cand = ckdir / ptr["path"]
        if (cand / "training" / "state.json").is_file():
            return cand
    except (OSError, ValueError, KeyError, TypeError):
        pass
    done = sorted(p for p in ckdir.glob("step_*") if (p / "training" / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, trainable: torch.nn.Module, optimizer, scheduler, ema) -> int:
    """Restore weights, optimiser, scheduler, EMA and RNG from ``path``; returns its step."""
    tr = Path(path) / "training"
    state = json.loads((tr / "state.json").read_text())
    trainable.load_state_dict(load_safetensors(tr / "trainable.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(load_safetensors(tr / "optimizer.safetensors"), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(load_safetensors(tr / "ema.safetensors"))
    torch.set_rng_state(load_safetensors(tr / "rng.safetensors")["torch"])
    return int(state["step"])
