#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, pip, gcc): a virtual environment in
# .venv with torch for this machine's hardware, the engine (editable) and the test dependencies.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
#
# torch follows the same rule as the Blender add-on's "Set up engine" (blender_addon/engine_env.py):
# the CUDA build when an NVIDIA driver is present, the ROCm build with a ROCm device, PyPI's on
# macOS, the CPU build otherwise (from a wheel folder pip is configured with when it holds it,
# else PyTorch's CPU index). Override: GEN3DFACE_TORCH=cpu|cuda|rocm|<index URL>|<wheel folder>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch first, pinned: a plain torch requirement would pull several GB of CUDA packages
# on a machine without an NVIDIA GPU.
mapfile -t torch_args < <(.venv/bin/python blender_addon/engine_env.py torch-args --pip-wheels)
[ "${#torch_args[@]}" -gt 0 ] || exit 2
stamp=.venv/.gen3dface-installed
want="${torch_args[*]}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "${torch_args[@]}"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,eval]"
  echo "$want" > "$stamp"
fi
# Build the template and texture caches now, so the first generate is as fast as the rest.
.venv/bin/python -m engine warmup >/dev/null
