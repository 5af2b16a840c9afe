"""Create the engine's virtual environment and pip-install the engine into it. No ``bpy``.

Blender's Python cannot run torch, so the engine gets its own venv in the extension's
user folder. torch comes first and pinned: a plain ``torch`` requirement on Linux pulls
several GB of CUDA wheels (DESIGN.md, "Dependencies"); the CPU index keeps it small.
The commands are plain argument lists so the preferences can also print them for users
who install by hand (online access disabled).
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TORCH_REQUIREMENT = "torch==2.13.0"
#: PyTorch's CPU-only wheel index (advice: without it Linux gets the CUDA build).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def venv_python(venv_dir: str | Path) -> Path:
    """The Python executable inside a venv."""
    if sys.platform == "win32":
        return Path(venv_dir, "Scripts", "python.exe")
    return Path(venv_dir, "bin", "python")


def setup_commands(base_python: str, venv_dir: str | Path, package_dir: str | Path,
                   torch_index: str = TORCH_CPU_INDEX) -> list[tuple[str, list[str]]]:
    """(title, argv) steps: make the venv, upgrade pip, install torch, install the engine.

    base_python: a Python 3.11 (Blender's own works). package_dir: the extension folder
    holding pyproject.toml. torch_index: extra index for torch ('' = the default index).
    """
    py = str(venv_python(venv_dir))
    torch = [py, "-m", "pip", "install", TORCH_REQUIREMENT]
    if torch_index:
        torch += ["--index-url", torch_index]
    return [
        ("Create the virtual environment", [str(base_python), "-m", "venv", str(venv_dir)]),
        ("Upgrade pip", [py, "-m", "pip", "install", "--upgrade", "pip"]),
        ("Install torch", torch),
        ("Install the engine", [py, "-m", "pip", "install", str(package_dir)]),
    ]


def shell_text(steps: list[tuple[str, list[str]]]) -> list[str]:
    """The steps as lines a user can paste into a terminal (quoted for POSIX shells)."""
    import shlex

    return [" ".join(shlex.quote(a) for a in argv) for _, argv in steps]


@dataclass
class SetupJob:
    """Runs the setup steps on a thread; the UI reads ``step``, ``title``, ``lines``, ``error``."""

    steps: list[tuple[str, list[str]]]
    step: int = 0
    title: str = ""
    lines: list[str] = field(default_factory=list)
    error: str = ""
    done: bool = False
    _proc: subprocess.Popen | None = None
    _cancelled: bool = False

    def start(self) -> "SetupJob":
        threading.Thread(target=self._run, name="gen3dface-setup", daemon=True).start()
        return self

    @property
    def factor(self) -> float:
        return min(1.0, self.step / max(1, len(self.steps)))

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def _run(self) -> None:
        try:
            for i, (title, argv) in enumerate(self.steps):
                self.step, self.title = i, title
                if self._cancelled:
                    self.error = "cancelled"
                    return
                log.info("%s: %s", title, " ".join(argv))
                self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True, errors="replace")
                for line in self._proc.stdout:
                    self.lines = (self.lines + [line.rstrip()])[-8:]
                if self._proc.wait() != 0:
                    last = self.lines[-1] if self.lines else ""
                    self.error = f"{title} failed (exit {self._proc.returncode}): {last}"
                    return
            self.step, self.title = len(self.steps), "Done"
        except OSError as exc:
            self.error = f"{self.title} failed: {exc}"
        finally:
            self.done = True
