"""Exponential moving average of the trainable weights (optional, ``TrainConfig.ema_decay``)."""
from __future__ import annotations

import torch


class EMA:
    """shadow ← decay·shadow + (1 − decay)·weights after every optimiser step (floating tensors only)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        own = module.state_dict()
        for k, v in self.shadow.items():
            own[k].copy_(v.to(own[k].dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone().float() for k, v in state.items()}
