#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (not part of CI: it runs the
# relevant tests once per mutant, minutes to hours per module on a CPU).
#
#   bash scripts/mutation.sh [MODULE...]      # default: every module below
#   bash scripts/mutation.sh --list
#
# For each module it copies the committed tree (git archive HEAD) into
# $MUTATION_DIR/<module> (default .mutation/), writes mutmut's [mutmut] section into
# that copy's setup.cfg (mutmut 3 reads [tool.mutmut] in pyproject.toml or [mutmut] in
# setup.cfg from the working directory: `source_paths`, `only_mutate` globs,
# `pytest_add_cli_args_test_selection` for the tests to run), runs `mutmut run`, and
# prints the surviving and the timed-out mutants, the counts and the score two ways (mutants
# no test reaches count as survived in both; segfaults count as killed):
#   score (timeouts killed)   = (killed + timeout) / (killed + timeout + survived)
#   score (timeouts excluded) = killed / (killed + survived), timeouts left out of both.
# mutmut 3.8.1's timeout is wall-clock ((estimated test time + 1 s) x 15): on a loaded machine a
# mutant that cannot hang may time out, so the first score is an upper bound and the second,
# which needs a test to fail, the one to trust; a timed-out mutant can be re-run alone on a quiet
# machine (`mutmut run NAME` in the module's copy) to settle it.
#
# Environment: PYTHON (default .venv/bin/python) with mutmut 3.8.1 installed
# (`python -m pip install -e ".[mutation]"`); MUTATION_JOBS (mutants run in parallel,
# default 1: the tests are single-threaded and the CPU is small); MUTATION_DIR.
# The committed tree is tested: commit (or stash) before running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
JOBS="${MUTATION_JOBS:-1}"
WORK="${MUTATION_DIR:-$ROOT/.mutation}"

# module name | source files to mutate (globs) | tests that cover them [| pytest -k expression]
# (the protocol's import test runs `python -S`, which cannot import mutmut's trampoline; NeuS and
# its sampler run their toy-sized tests, not the end-to-end fits of test_neus.py / test_harness.py,
# which take 5-15 s each: mutmut runs every test that reaches a mutated function; the fit leaves out
# its thread-count test: mutmut forks every mutant from a process that has run the tests, and once
# torch has run a 2-thread region there, each forked mutant deadlocks in its first parallel op, which
# mutmut reported as timeouts, i.e. kills, of mutants that cannot hang)
MODULES=(
  "protocol|engine/protocol.py|tests/engine/test_protocol.py|not standard_library_only"
  "rundir|engine/rundir.py|tests/engine/test_rundir.py tests/engine/test_rundir_contract.py"
  "mesh|recon/mesh.py|tests/recon/test_mesh.py"
  "export|recon/export.py|tests/recon/test_export.py"
  "pipeline|engine/multiview/diffusion/pipeline.py|tests/engine/test_diffusion_pipeline_parts.py tests/engine/test_diffusion_model.py tests/engine/test_diffusion_pipeline.py"
  "conditioner|engine/multiview/diffusion/conditioner.py|tests/engine/test_diffusion_conditioner.py tests/engine/test_diffusion_model.py tests/engine/test_diffusion_fast_paths.py tests/engine/test_diffusion_pipeline.py"
  "neus|recon/neus.py recon/fields.py|tests/recon/test_fields.py tests/recon/test_neus_parts.py tests/recon/test_neus.py|not nan_raises and not cancel_raises and not deterministic_for_a_seed and not training_moves"
  "sampling|recon/sampling.py recon/_nerfacc_backend.py|tests/recon/test_sampling.py tests/recon/test_nerfacc_backend.py tests/recon/test_neus_parts.py"
  "fit|engine/prior/fit.py|tests/engine/test_fit_parts.py|not thread_count"
)

if [[ "${1:-}" == "--list" ]]; then
  for m in "${MODULES[@]}"; do IFS='|' read -r name files tests <<<"$m"; echo "$name: $files  ← $tests"; done
  exit 0
fi
"$PYTHON" -c "import mutmut" 2>/dev/null || { echo "mutmut is not installed in $PYTHON: $PYTHON -m pip install mutmut==3.8.1" >&2; exit 2; }
MUTMUT="$(dirname "$PYTHON")/mutmut"

wanted=("$@")
run_one() {
  local name="$1" files="$2" tests="$3" select="$4" dir="$WORK/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  git -C "$ROOT" archive HEAD | tar -x -C "$dir"
  local sources=() globs=()
  for f in $files; do sources+=("${f%%/*}/"); globs+=("$f"); done
  {
    echo "[mutmut]"
    # the packages the mutated file lives in; the others are copied beside them unmutated
    printf 'source_paths=\n'; printf '    %s\n' $(printf '%s\n' "${sources[@]}" | sort -u)
    printf 'only_mutate=\n'; printf '    %s\n' "${globs[@]}"
    printf 'also_copy=\n'
    for extra in engine/ recon/ weights/ blender_addon/ __init__.py blender_manifest.toml; do
      [[ " ${sources[*]} " == *" $extra "* ]] || printf '    %s\n' "$extra"
    done
    printf 'pytest_add_cli_args=\n    -q\n    -p\n    no:cacheprovider\n'
    [[ -z "$select" ]] || printf '    -k\n    %s\n' "$select"
    printf 'pytest_add_cli_args_test_selection=\n'; printf '    %s\n' $tests
  } >>"$dir/setup.cfg"
  echo "== $name: mutating $files with $tests"
  (cd "$dir" && env -u PYTHONPATH OMP_NUM_THREADS=1 "$MUTMUT" run --max-children "$JOBS" >"$dir/run.log" 2>&1) || {
    echo "mutmut run failed for $name (see $dir/run.log):" >&2; tail -20 "$dir/run.log" >&2; return 1; }
  (cd "$dir" && env -u PYTHONPATH "$MUTMUT" results --all true >"$dir/results.txt" 2>&1) || true
  "$PYTHON" - "$dir/results.txt" "$name" <<'EOF'
import collections, sys
rows = [l.strip().rsplit(": ", 1) for l in open(sys.argv[1]) if ": " in l]
status = collections.Counter(s for _, s in rows)
name = sys.argv[2]
killed = status["killed"] + status["segfault"]
timeout = status["timeout"]
survived = status["survived"] + status["no tests"]
other = sum(status.values()) - killed - timeout - survived
print(f"   {name}: {dict(status)}")
for mutant, s in rows:
    if s in ("survived", "no tests", "timeout"):
        print(f"   {s}: {mutant}")
if other:
    print(f"   {name}: {other} mutants neither killed, timed out nor survived (not checked / suspicious / skipped): "
          "not in the scores")
print(f"   {name}: {killed} killed, {timeout} timeouts, {survived} survived")
a, b = killed + timeout, killed + timeout + survived
print(f"   score {name} (timeouts killed):   {a}/{b} = {100 * a / max(b, 1):.1f} %")
print(f"   score {name} (timeouts excluded): {killed}/{killed + survived} = {100 * killed / max(killed + survived, 1):.1f} %")
EOF
}

status=0
for m in "${MODULES[@]}"; do
  IFS='|' read -r name files tests select <<<"$m"
  if (( ${#wanted[@]} )) && [[ ! " ${wanted[*]} " == *" $name "* ]]; then continue; fi
  run_one "$name" "$files" "$tests" "${select:-}" || status=1
done
echo "Inspect a surviving mutant: cd $WORK/<module> && $MUTMUT show <name>"
exit $status
