#!/usr/bin/env bash
# Run the Blender tests (tests/blender) against one bpy release in its own venv.
#
#   bash scripts/test_blender.sh VERSION [pytest args...]     e.g.  bash scripts/test_blender.sh 4.2.23
#
# The venv is .venv-bpy<VERSION> in the repository root. bpy 4.2 … 5.0 (Python 3.11 wheels):
# torch==2.13.0 (the local CPU wheel on these machines), the engine (pip install -e .) and its
# dependencies, the `test` extra of pyproject.toml except its bpy pin, and bpy==VERSION; that
# venv is also the engine the add-on runs. bpy 5.1+ (Python 3.13 wheels, like Blender 5.1+
# itself): bpy==VERSION, pytest, pillow, scikit-image and trimesh only — the engine needs Python 3.11,
# so the add-on under test runs it from GEN3DFACE_TEST_ENGINE_PYTHON (default .venv/bin/python,
# made by scripts/setup.sh), and tests marked `engine_inprocess` (they import the engine's
# dependencies into the test's own Python) are left to the 3.11 runs.
# The venv is made once: a stamp (hash of pyproject.toml, this script, VERSION and the checkout's
# path) skips pip on later runs, and a change to any of them re-runs pip in the same venv.
# Exit code: pytest's (5 = no test ran, a failure here), 2 for usage, 3 when the venv cannot be made.
# Env: PYTHON (a CPython 3.11, or 3.13 for bpy 5.1+), OMP_NUM_THREADS (default 2),
# GEN3DFACE_VENV_PARENT (folder for the venv instead of the repository root: a CI that clones
# afresh each run keeps it warm there; a new clone path re-runs pip, ~10 s, to repoint -e .),
# GEN3DFACE_TEST_ENGINE_PYTHON (bpy 5.1+: the Python 3.11 with the engine).
set -uo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "usage: bash scripts/test_blender.sh VERSION [pytest args...]  (VERSION like 4.2.23)" >&2
    exit 2
fi
VERSION=$1
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${GEN3DFACE_VENV_PARENT:-$ROOT}/.venv-bpy$VERSION"
VPY="$VENV/bin/python"
TORCH="torch==2.13.0"
t0=$SECONDS

say() { echo "test_blender.sh: $*" >&2; }

# bpy 5.1 and later ship cp313 wheels only; earlier releases cp311 only.
if [[ "$(printf '%s\n' "$VERSION" 5.1.0 | sort -V | head -1)" == "5.1.0" ]]; then
    WANT_PY=3.13
else
    WANT_PY=3.11
fi

find_python() {
    local py
    for py in "${PYTHON:-}" "python$WANT_PY" python3; do
        [[ -n "$py" ]] || continue
        if "$py" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$WANT_PY'.split('.'))))" 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    # pyenv keeps other versions out of PATH until asked for
    if command -v pyenv >/dev/null; then
        local v
        v=$(pyenv versions --bare 2>/dev/null | grep -E "^${WANT_PY//./\\.}(\.[0-9]+)?$" | sort -V | tail -1)
        if [[ -n "$v" && -x "$(pyenv root)/versions/$v/bin/python$WANT_PY" ]]; then
            echo "$(pyenv root)/versions/$v/bin/python$WANT_PY"
            return 0
        fi
    fi
    return 1
}

stamp_of() {
    { cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}"; echo "$VERSION $ROOT"; } | sha256sum | cut -d' ' -f1
}

# The `test` extra without its bpy pin: the one pin this script replaces.
test_requirements() {
    "$1" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys, tomllib
extra = tomllib.load(open(sys.argv[1], "rb"))["project"].get("optional-dependencies", {}).get("test", [])
print("\n".join(r for r in extra if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() != "bpy"))
EOF
}

make_venv() {
    local py reqs=()
    py=$(find_python) || { say "no CPython $WANT_PY found (set PYTHON=...): bpy $VERSION needs one"; return 1; }
    if [[ ! -x "$VPY" ]]; then
        say "creating $VENV with $py"
        "$py" -m venv "$VENV" || return 1
    fi
    if [[ $WANT_PY == 3.13 ]]; then
        # No engine here (Python 3.11 only): what the tests' own side needs.
        reqs=("bpy==$VERSION" "pytest>=8" "pillow>=10" "scikit-image>=0.21" "trimesh>=4.0")
        say "pip: ${reqs[*]}"
        "$VPY" -m pip install --quiet --progress-bar off "${reqs[@]}" \
            2> >(grep -v "^WARNING: Location 'file://" >&2) || return 1
        local got
        got=$("$VPY" -c 'import importlib.metadata as m; print(m.version("bpy"))') || return 1
        [[ "$got" == "$VERSION" ]] || { say "wrong bpy in $VENV: $got"; return 1; }
        return 0
    fi
    local text
    text=$(test_requirements "$VPY") || return 1
    mapfile -t reqs < <(grep -v '^$' <<< "$text")
    say "pip: $TORCH, -e ., bpy==$VERSION, ${reqs[*]}"
    # One resolver run: the exact torch pin keeps pip on the CPU wheel, bpy==VERSION replaces the extra's pin.
    # (This machine's pip config names local indexes that may be absent: drop those warnings.)
    "$VPY" -m pip install --quiet --progress-bar off "$TORCH" -e "$ROOT" "bpy==$VERSION" "${reqs[@]}" \
        2> >(grep -v "^WARNING: Location 'file://" >&2) || return 1
    local got
    got=$("$VPY" -c 'import importlib.metadata as m; print(m.version("bpy"), m.version("numpy"))') || return 1
    if [[ "${got%% *}" != "$VERSION" || "${got#* }" == 2.* ]]; then
        say "wrong versions in $VENV: bpy numpy = $got (want bpy $VERSION, numpy<2)"
        return 1
    fi
}

# One run at a time per venv (two CI jobs on one machine must not pip into it together).
mkdir -p "$(dirname "$VENV")" || exit 3
exec 9>"$VENV.lock"
flock 9

want=$(stamp_of)
if [[ -x "$VPY" && -f "$VENV/.gen3dface-stamp" && "$(cat "$VENV/.gen3dface-stamp")" == "$want" ]]; then
    say "reusing $VENV"
else
    rm -f "$VENV/.gen3dface-stamp"
    make_venv || { say "could not set up $VENV"; exit 3; }
    echo "$want" > "$VENV/.gen3dface-stamp"
    say "venv ready in $((SECONDS - t0)) s"
fi

cd "$ROOT" || exit 3
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
marks=()
if [[ $WANT_PY == 3.13 ]]; then
    export GEN3DFACE_TEST_ENGINE_PYTHON=${GEN3DFACE_TEST_ENGINE_PYTHON:-$ROOT/.venv/bin/python}
    if ! "$GEN3DFACE_TEST_ENGINE_PYTHON" -c 'import sys, engine, mediapipe; sys.exit(sys.version_info[:2] != (3, 11))' \
            2>/dev/null; then
        say "bpy $VERSION: GEN3DFACE_TEST_ENGINE_PYTHON=$GEN3DFACE_TEST_ENGINE_PYTHON is no Python 3.11 with the engine (run scripts/setup.sh)"
        exit 3
    fi
    say "engine Python for the add-on: $GEN3DFACE_TEST_ENGINE_PYTHON"
    marks=(-m "not engine_inprocess")
fi
"$VPY" -m pytest tests/blender -q -p no:cacheprovider "${marks[@]}" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    say "no test ran (pytest exit 5): counted as a failure"
fi
say "bpy $VERSION: pytest exit $rc, $((SECONDS - t0)) s in all"
exit $rc
