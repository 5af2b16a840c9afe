"""Errors raised by ``recon`` (no dependency on ``engine``: the engine maps them).

``ReconInputError`` → exit 2 (bad input: one line naming the file and the reason),
``ReconError`` → exit 1 (the optimisation failed, e.g. went NaN; nothing is written),
``ReconCancelled`` → exit 130 (``should_stop()`` returned True).
"""
from __future__ import annotations

from pathlib import Path


class ReconError(RuntimeError):
    """The reconstruction failed (e.g. non-finite values during optimisation)."""


class ReconInputError(ReconError):
    """A bad ``transforms.json``, image, mask or prior mesh.

    path: the offending file; reason: what is wrong with it (one line).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ReconCancelled(ReconError):
    """The caller asked to stop (``should_stop()`` returned True)."""

    def __init__(self, message: str = "reconstruction cancelled") -> None:
        super().__init__(message)
