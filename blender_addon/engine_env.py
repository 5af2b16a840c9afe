"""The engine's environment: which torch build, and the set-up steps as data. No bpy, no torch.

One rule for every way of installing the engine — the add-on's *Set up engine*
(``prefs.py`` runs these steps with ``engine_setup.SetupJob``) and ``scripts/setup.sh``
(``python blender_addon/engine_env.py torch-args``) — so both give the same torch:

- ``GEN3DFACE_TORCH`` / the *Torch build* preference: ``auto`` (default), ``cpu``,
  ``cuda``, ``rocm``, an index URL (``https://…``, ``file://…``) or a wheel folder.
- ``auto``: macOS → PyPI's torch (CPU + Apple GPU via MPS); an NVIDIA driver → the CUDA
  build; a ROCm device (Linux) → the ROCm build; otherwise the CPU build.
- The CPU build comes from PyTorch's CPU index, unless a local wheel folder given as a
  candidate (setup.sh passes pip's configured ``find-links``) already holds it.

The engine needs Python 3.11 (mediapipe 0.10.21 has no wheel for 3.12+, and Blender
5.1+ runs 3.13), so the set-up does not use Blender's Python for the engine: it installs
``uv`` with Blender's Python and lets uv find (or fetch) a Python 3.11.
"""
from __future__ import annotations

import functools
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__:  # inside Blender: bl_ext.<repo>.gen3dface.blender_addon; tests: blender_addon
    try:
        from ..engine import hardware
    except ImportError:
        from engine import hardware
else:  # run as a script by scripts/setup.sh: the repository root holds engine/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from engine import hardware

TORCH_VERSION = "2.13.0"
TORCH_REQUIREMENT = f"torch=={TORCH_VERSION}"
#: The Python the engine runs on (see the module docstring).
ENGINE_PYTHON = "3.11"
TORCH_ENV = "GEN3DFACE_TORCH"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
TORCH_CPU_INDEX = f"{PYTORCH_INDEX}/cpu"
#: PyTorch's index tags for the GPU builds of TORCH_VERSION.
CUDA_TAG = "cu128"
ROCM_TAG = "rocm6.4"
#: The kinds a user may name (anything else must be an index URL or an existing folder).
KINDS = ("auto", "cpu", "cuda", "rocm")
#: Written into a finished environment; an environment without it is never used.
STAMP = "gen3dface-engine.json"


class TorchChoiceError(ValueError):
    """The override names no torch build this machine can install."""


@dataclass(frozen=True)
class TorchSource:
    """Where torch comes from."""

    kind: str
    """``cpu``, ``cuda``, ``rocm``, ``pypi`` (PyPI's default build), ``index`` or ``wheels``."""
    reason: str
    """One line for logs and the preferences: what was chosen and why."""
    index_url: str = ""
    """Replaces PyPI for the torch step ('' = PyPI)."""
    find_links: str = ""
    """A folder of wheels searched first ('' = none)."""

    def install_args(self) -> list[str]:
        """The requirement and options, the same for ``pip install`` and ``uv pip install``."""
        args = [TORCH_REQUIREMENT]
        if self.index_url:
            args += ["--index-url", self.index_url]
        if self.find_links:
            args += ["--find-links", self.find_links]
        return args


def _python_tag(python: str) -> str:
    return "cp" + python.replace(".", "")


def local_cpu_wheel(folder: str | Path, system: str, python: str = ENGINE_PYTHON) -> Path | None:
    """A CPU torch wheel of TORCH_VERSION for ``python`` and ``system`` in ``folder``, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    plat = {"Linux": "linux", "Windows": "win", "Darwin": "macosx"}.get(system, "?")
    # macOS wheels carry no local version (PyPI's are CPU/MPS); the others say +cpu.
    prefix = f"torch-{TORCH_VERSION}-" if system == "Darwin" else f"torch-{TORCH_VERSION}+cpu-"
    tag = _python_tag(python)
    for wheel in sorted(folder.glob("torch-*.whl")):
        parts = wheel.name.split("-")
        if wheel.name.startswith(prefix) and len(parts) >= 5 and parts[2] == tag and plat in parts[-1]:
            return wheel
    return None


def _cpu(hw: hardware.Hardware, wheel_dirs: list[str], why: str) -> TorchSource:
    for folder in wheel_dirs:
        if local_cpu_wheel(folder, hw.system):
            return TorchSource("cpu", f"{why}: CPU build from the local wheel folder {folder}",
                               find_links=str(folder))
    if hw.system == "Darwin":
        return TorchSource("pypi", f"{why}: PyPI's macOS build (CPU, Apple GPU via MPS)")
    return TorchSource("cpu", f"{why}: CPU build", index_url=TORCH_CPU_INDEX)


@functools.lru_cache(maxsize=1)
def this_machine() -> hardware.Hardware:
    """``hardware.detect()`` once per process: the preferences redraw often and nvidia-smi is slow."""
    return hardware.detect()


def choose_torch(override: str = "", hw: hardware.Hardware | None = None,
                 wheel_dirs: list[str] | None = None) -> TorchSource:
    """The torch build for ``hw`` (default: this machine), following the module's rule.

    override: the preference or ``$GEN3DFACE_TORCH`` ('' = auto). wheel_dirs: local
    folders that may already hold the CPU wheel. Raises TorchChoiceError for an override
    that is none of the kinds, not a URL and not a folder, or a build ``hw`` cannot run.
    """
    hw = hw or this_machine()
    wheel_dirs = [d for d in (wheel_dirs or []) if d]
    value = (override or "auto").strip()
    kind = value.lower()
    if kind == "auto":
        if hw.system == "Darwin":
            return _cpu(hw, wheel_dirs, "macOS")
        if hw.nvidia:
            gpus = ", ".join(hw.nvidia_gpus) or "NVIDIA driver"
            return TorchSource("cuda", f"NVIDIA GPU found ({gpus}): CUDA build",
                               index_url=f"{PYTORCH_INDEX}/{CUDA_TAG}")
        if hw.amd_rocm:
            return TorchSource("rocm", "ROCm device found (/dev/kfd): ROCm build",
                               index_url=f"{PYTORCH_INDEX}/{ROCM_TAG}")
        return _cpu(hw, wheel_dirs, "no NVIDIA GPU found")
    if kind == "cpu":
        return _cpu(hw, wheel_dirs, f"{TORCH_ENV}=cpu")
    if kind in ("cuda", "rocm"):
        if hw.system == "Darwin" or (kind == "rocm" and hw.system != "Linux"):
            raise TorchChoiceError(f"torch build {kind!r}: PyTorch ships none for {hw.system}")
        tag = CUDA_TAG if kind == "cuda" else ROCM_TAG
        return TorchSource(kind, f"{TORCH_ENV}={kind}: {kind.upper()} build", index_url=f"{PYTORCH_INDEX}/{tag}")
    if value.startswith(("https://", "http://", "file://")):
        return TorchSource("index", f"torch from the index {value}", index_url=value)
    if Path(value).expanduser().is_dir():
        folder = str(Path(value).expanduser().resolve())
        return TorchSource("wheels", f"torch from the wheel folder {folder}", find_links=folder)
    raise TorchChoiceError(f"torch build {value!r}: expected one of {', '.join(KINDS)}, "
                           "an index URL or an existing wheel folder")


# --- the set-up as steps ------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One command of the set-up."""

    title: str
    """What the preferences show while it runs, and what a failure names."""
    argv: tuple[str, ...]
    """The command (no shell)."""


def venv_python(env_dir: str | Path, system: str | None = None) -> Path:
    """The Python executable inside a virtual environment."""
    windows = (system or ("Windows" if sys.platform == "win32" else "")) == "Windows"
    return Path(env_dir, "Scripts", "python.exe") if windows else Path(env_dir, "bin", "python")


def uv_in(tools_dir: str | Path, system: str | None = None) -> Path:
    """Where ``pip install --target tools_dir uv`` puts the uv executable."""
    windows = (system or ("Windows" if sys.platform == "win32" else "")) == "Windows"
    return Path(tools_dir, "bin", "uv.exe") if windows else Path(tools_dir, "bin", "uv")


def plan(base_python: str, env_dir: str | Path, package_dir: str | Path, torch: TorchSource,
         uv: str | Path, install_uv: bool, tools_dir: str | Path = "") -> list[Step]:
    """The set-up steps, in order.

    base_python: the Python that installs uv (Blender's own; any version ≥ 3.8).
    env_dir: the environment to create (the runner builds into a temporary sibling and
    swaps it in only after the last step). package_dir: the extension folder holding
    pyproject.toml (whose dependencies are installed; the engine itself runs from there). uv: the uv executable to use. install_uv: add the step that installs
    uv into ``tools_dir`` with ``base_python -m pip`` (uv then lands at ``uv_in(tools_dir)``).
    """
    py = str(venv_python(env_dir))
    steps = []
    if install_uv:
        steps.append(Step("Install uv", (str(base_python), "-m", "pip", "install", "--disable-pip-version-check",
                                         "--upgrade", "--target", str(tools_dir), "uv")))
    uv = str(uv)
    steps += [
        Step(f"Find or fetch Python {ENGINE_PYTHON}", (uv, "venv", "--relocatable", "--python", ENGINE_PYTHON, str(env_dir))),
        Step("Install torch", (uv, "pip", "install", "--python", py, *torch.install_args())),
        # The dependencies only, read from pyproject.toml: the add-on runs the engine from the
        # extension's own copy (client.engine_env), so nothing is built or written there.
        Step("Install the engine", (uv, "pip", "install", "--python", py, "-r", str(Path(package_dir, "pyproject.toml")))),
        # Builds the template, its UV atlas and texel raster into the user's cache folder, so that
        # the first run is as fast as the others (engine/warmup.py; ~30 s CPU once).
        Step("Warm the caches", (py, "-c", f"import sys; sys.path.insert(0, {str(package_dir)!r}); "
                                           "from engine.warmup import warm_caches; print(warm_caches())")),
        # Imports what a run needs; its last line is doctor's device report (JSON) for the preferences.
        Step("Check the engine", (py, "-c", f"import sys; sys.path.insert(0, {str(package_dir)!r}); "
                                            "import json, mediapipe, nerfacc, engine.cli; from engine.doctor "
                                            "import device_report; print(json.dumps(device_report()))")),
    ]
    return steps


def _quote(arg: str, system: str) -> str:
    if system != "Windows":
        return shlex.quote(arg)
    return f'"{arg}"' if any(c in arg for c in ' &()^%!;,') else arg


def manual_commands(system: str, env_dir: str, package_dir: str, torch: TorchSource) -> list[str]:
    """The set-up as lines to paste into a terminal on ``system`` (Linux, Windows, Darwin)."""
    q = lambda a: _quote(str(a), system)  # noqa: E731
    py = venv_python(env_dir, system)
    if system == "Windows":
        py = Path(str(py).replace("/", "\\"))
    install_uv = "py -m pip install uv" if system == "Windows" else "python3 -m pip install uv"
    torch_args = " ".join(q(a) for a in torch.install_args())
    return [
        f"{install_uv}    (or see https://docs.astral.sh/uv/ for uv's installer)",
        f"uv venv --python {ENGINE_PYTHON} {q(env_dir)}",
        f"uv pip install --python {q(py)} {torch_args}",
        f"uv pip install --python {q(py)} -r {q(str(Path(package_dir, 'pyproject.toml')))}",
        f"cd {'/d ' if system == 'Windows' else ''}{q(package_dir)} && {q(py)} -m engine warmup",
        f"then set Engine Python to {py}",
    ]


def _pip_find_links() -> list[str]:
    """Wheel folders pip is configured with (``PIP_FIND_LINKS``, ``pip config``): setup.sh's candidates."""
    import subprocess

    found = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=30)
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.endswith("find-links"):
                found += value.strip().strip("'\"").split()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return [f[len("file://"):] if f.startswith("file://") else f for f in found]


def main(argv: list[str] | None = None) -> int:
    """``python engine_env.py torch-args``: the torch requirement and options, one per line."""
    import argparse

    parser = argparse.ArgumentParser(prog="engine_env.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("torch-args", help="print the torch requirement and pip/uv options, one per line")
    p.add_argument("--torch", default=None, help=f"override (default ${TORCH_ENV} or auto)")
    p.add_argument("--pip-wheels", action="store_true", help="use pip's configured find-links as local wheel folders")
    args = parser.parse_args(argv)
    try:
        source = choose_torch(args.torch if args.torch is not None else os.environ.get(TORCH_ENV, ""),
                              wheel_dirs=_pip_find_links() if args.pip_wheels else [])
    except TorchChoiceError as exc:
        print(f"engine_env.py: {exc}", file=sys.stderr)
        return 2
    print(f"torch: {source.reason}", file=sys.stderr)
    print("\n".join(source.install_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
