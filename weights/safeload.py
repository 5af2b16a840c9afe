"""Verified weight files: safetensors only at run time (never unpickle in a run).

``load_safetensors`` checks that the file exists, parses (a truncated or corrupt file fails
here, not deep inside a model) and, when a digest is known, matches its sha256.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .discovery import safetensors_problem


class WeightsError(Exception):
    """A weight file is missing, corrupt or not the expected one. ``path``: the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _check_header(path: Path) -> None:
    """The 8-byte length + JSON header of a safetensors file, validated without loading data."""
    problem = safetensors_problem(path)
    if problem:
        raise WeightsError(path, problem)


def load_safetensors(path: str | Path, sha256: str | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file after the checks above."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, "file not found")
    _check_header(path)
    if sha256 and sha256_file(path) != sha256.lower():
        raise WeightsError(path, "sha256 does not match the expected digest (corrupt or a different file)")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(path, f"cannot read: {exc}") from None


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> str:
    """Write contiguous CPU copies of ``tensors``; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))
    return sha256_file(path)
