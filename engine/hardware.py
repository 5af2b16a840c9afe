"""What GPUs this machine has, without torch: an NVIDIA driver, an AMD ROCm device.

Standard library only, so both the engine's ``doctor`` (to warn about a CPU-only torch
on a machine with an NVIDIA GPU) and the add-on's set-up (to choose the torch build,
``blender_addon/engine_env.py``) use the same probe. Looking for the *driver* rather
than asking torch is the point: a CPU build of torch cannot see the GPU it is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Hardware:
    """The facts the torch choice depends on."""

    system: str
    """``platform.system()``: ``Linux``, ``Windows`` or ``Darwin``."""
    nvidia: bool = False
    """An NVIDIA driver is installed (``/proc/driver/nvidia`` or ``nvidia-smi``)."""
    nvidia_gpus: tuple[str, ...] = field(default_factory=tuple)
    """GPU names from ``nvidia-smi`` (empty when it is missing or fails)."""
    amd_rocm: bool = False
    """A ROCm compute device node (``/dev/kfd``, Linux only)."""


def _nvidia_smi_names(exe: str) -> tuple[str, ...]:
    try:
        done = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return tuple(line.strip() for line in done.stdout.splitlines() if line.strip())


def detect(system: str | None = None, proc: str | Path = "/proc", dev: str | Path = "/dev",
           path: str | None = None) -> Hardware:
    """Probe this machine. ``proc``/``dev``/``path`` (the ``PATH`` searched for ``nvidia-smi``)
    are parameters so tests can point them at folders of their own."""
    import platform

    system = system or platform.system()
    smi = shutil.which("nvidia-smi", path=path if path is not None else os.environ.get("PATH"))
    if smi is None and sys.platform == "win32":  # the driver puts it here, not always on PATH
        candidate = Path(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "nvidia-smi.exe")
        smi = str(candidate) if candidate.exists() else None
    names = _nvidia_smi_names(smi) if smi else ()
    driver = system == "Linux" and Path(proc, "driver", "nvidia", "version").exists()
    amd = system == "Linux" and Path(dev, "kfd").exists()
    return Hardware(system=system, nvidia=bool(driver or names), nvidia_gpus=names, amd_rocm=amd)
