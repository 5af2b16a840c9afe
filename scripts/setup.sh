#!/usr/bin/env bash
# Set up everything on a fresh machine (Python 3.11, pip, gcc): a virtual environment in
# .venv with the CPU torch wheel, the engine (editable) and the test dependencies.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.gen3dface-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch first, pinned: 2.13.0 resolves to the CPU wheel on these machines; an unpinned
  # torch would pull several GB of CUDA packages. Users with a GPU install their CUDA build first.
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  touch "$stamp"
fi
# Build the template and texture caches now, so the first generate is as fast as the rest.
.venv/bin/python -m engine warmup >/dev/null
