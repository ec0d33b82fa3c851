#!/usr/bin/env bash
# One call that turns a CUDA machine into measurements: build, GPU tests,
# compute-sanitizer, the benchmark suite. Made for a machine available for minutes,
# where nothing can be downloaded: each step has a time budget, a failing step is
# recorded and the next ones still run. The budgets add up to 890 s (under 750 s
# with --prebuilt, whose build step takes seconds); they are sized from the first
# run on an H200 (2026-11-30: all 11,418 GPU tests take about 10 minutes on 8
# workers, so a 1-in-4 spread of them runs; a bench case takes 5 to 45 s when it
# compiles, so the ops bench compiles none and the models bench one model).
# DEADLINE_S caps the whole run: a step gets at most the time left, and a step with
# under 10 s left is recorded as not run. Everything lands in one folder of at most
# 8 files, each written as the steps go (a run cut short still leaves them):
#
#   summary.md            step, status, seconds; GPU, driver, versions, commit, date
#   steps.log             the full output of every step
#   failures.log          each failing test's report, written when it fails
#   ops_results.json      python -m bench: ops and units (results.json)
#   ops_report.md         ... and its report
#   models_results.json   python -m bench: whole models, batch 32
#   models_report.md      ... and its report
#
# Usage: bench/gpu_check.sh [--dry-run] [--prebuilt] [--wheels DIR] [--out DIR]
#   --dry-run    every step but the GPU ones (those are listed as skipped): checks
#                the script, the tools and the output folder on a machine without a GPU
#   --prebuilt   use the extension already built in the tree (shufflenet_kernels/_C.abi3.so,
#                e.g. built with SHUFFLENET_CUDA=1 elsewhere and copied over: it is abi3)
#                when it imports with its CUDA kernels; build it otherwise
#   --wheels DIR install the wheels in DIR first (packages the machine lacks, e.g.
#                expecttest for opcheck: `pip download expecttest -d DIR` beforehand)
#   --out DIR    output folder (default: $OUT when set, else bench/out/gpu_check)
# Env: PYTHON (default python3), BUDGET_SCALE (multiplies every step's time budget),
#      GPU_SAMPLE (run every N-th parametrisation of each GPU test; default 4, 1: all),
#      DEADLINE_S (seconds the whole run may take; default: no limit).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
PREBUILT=0
WHEELS=""
OUT_DIR="${OUT:-$ROOT/bench/out/gpu_check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --prebuilt) PREBUILT=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) OUT_DIR="$2"; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.md"
LOG="$OUT_DIR/steps.log"
# tests/conftest.py appends each failing test's report here as it fails, so a step
# stopped by its budget still leaves the tracebacks of what failed before.
export SHUFFLENET_FAILURE_LOG="$OUT_DIR/failures.log"
: >"$SHUFFLENET_FAILURE_LOG"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
: >"$LOG"
START=$SECONDS
FAILED=0
ROWS=()

# write_summary: the summary as it stands, rewritten after every step.
write_summary() {
  {
    echo "# GPU check$([ "$DRY_RUN" = 1 ] && echo ' (dry run: GPU steps skipped)')"
    echo
    printf '%s\n' "$ENVIRONMENT"
    echo
    echo "| step | result | seconds | budget |"
    echo "|---|---|---|---|"
    [ "${#ROWS[@]}" -gt 0 ] && printf '%s\n' "${ROWS[@]}"
    echo
    echo "Total: $((SECONDS - START)) s. Full output: steps.log; failing tests' reports: failures.log."
  } >"$SUMMARY"
}

# run_step NAME BUDGET_S COMMAND...: runs COMMAND with a time limit, appends its
# output to steps.log and a row to the summary; never stops the script.
run_step() {
  local name="$1" budget="$2"
  shift 2
  budget=$(awk -v b="$budget" -v s="${BUDGET_SCALE:-1}" 'BEGIN { printf "%d", b * s }')
  if [ -n "${DEADLINE_S:-}" ]; then
    local left=$((DEADLINE_S - (SECONDS - START)))
    if [ "$left" -lt 10 ]; then
      echo "-- $name: not run (${left}s left of DEADLINE_S=${DEADLINE_S})" | tee -a "$LOG"
      FAILED=1
      ROWS+=("| $name | NOT RUN (deadline) | 0 | ${budget} |")
      write_summary
      return
    fi
    [ "$left" -lt "$budget" ] && budget=$left
  fi
  echo "== $name (budget ${budget}s): $*" | tee -a "$LOG"
  local t0=$SECONDS status
  timeout --kill-after=10 "$budget" "$@" >>"$LOG" 2>&1
  status=$?
  local took=$((SECONDS - t0)) verdict="passed"
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    verdict="TIMED OUT"
  elif [ "$status" -ne 0 ]; then
    verdict="FAILED (exit $status)"
  fi
  [ "$verdict" = passed ] || FAILED=1
  echo "-- $name: $verdict in ${took}s" | tee -a "$LOG"
  ROWS+=("| $name | $verdict | $took | ${budget} |")
  write_summary
}

# gpu_step NAME BUDGET_S DRY_COMMAND -- COMMAND...: COMMAND on a GPU; with --dry-run,
# DRY_COMMAND (a shell string checking what can be checked without a GPU) instead.
gpu_step() {
  local name="$1" budget="$2" dry="$3"
  shift 4
  if [ "$DRY_RUN" = 1 ]; then
    run_step "$name [dry run: $dry]" "$budget" bash -c "$dry"
  else
    run_step "$name" "$budget" "$@"
  fi
}

# bench_to PREFIX ARGS...: python -m bench, its results and report renamed into OUT_DIR.
bench_to() {
  local prefix="$1"
  shift
  "$PYTHON" -m bench --no-plots --out "$SCRATCH/$prefix" "$@" || return $?
  cp "$SCRATCH/$prefix/results.json" "$OUT_DIR/${prefix}_results.json"
  cp "$SCRATCH/$prefix/report.md" "$OUT_DIR/${prefix}_report.md"
}
export -f bench_to
export PYTHON SCRATCH OUT_DIR

# The environment, first: it is what makes the numbers comparable.
environment() {
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -n 1)"
  else
    echo "- GPU: none (nvidia-smi not found)"
  fi
  echo "- nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
  echo "- compute-sanitizer: $(command -v compute-sanitizer || echo 'not on PATH')"
  "$PYTHON" - <<'EOF' 2>&1 | sed 's/^/- /'
import platform, torch
print(f"python: {platform.python_version()}")
print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
try:
    import triton
    print(f"triton: {triton.__version__}")
except ImportError:
    print("triton: not installed")
print(f"cuda available: {torch.cuda.is_available()}")
EOF
}

if [ "$DRY_RUN" = 0 ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA device visible to torch; use --dry-run on a machine without one" >&2
  exit 2
fi

ENVIRONMENT="$(environment)"

if [ -n "$WHEELS" ]; then
  run_step "install carried wheels" 60 "$PYTHON" -m pip install --no-index --no-deps "$WHEELS"/*.whl
fi
# Build with the CUDA kernels required: a silent CPU-only build would make every
# GPU test skip or fall back.
build() {
  if [ "$PREBUILT" = 1 ] && "$PYTHON" -c "import shufflenet_kernels as s, sys; sys.exit(0 if s.has_cuda_kernels() else 1)"; then
    echo "using the prebuilt extension: $(ls -l shufflenet_kernels/_C.abi3.so)"
    return 0
  fi
  env MAX_JOBS="$(nproc)" SHUFFLENET_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -e "$ROOT"
}
export -f build
export PREBUILT ROOT
gpu_step "build" 150 "test -f shufflenet_kernels/_C.abi3.so" -- bash -c build
gpu_step "build check" 90 "$PYTHON -m pytest -q -p no:cacheprovider tests/test_build.py" -- \
  env SHUFFLENET_EXPECT_CUDA=1 SHUFFLENET_EXPECT_TRITON=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_build.py
# The GPU tests: every GPU_SAMPLE-th parametrisation of each (tests/conftest.py), with a
# time budget rather than stopping at the first failure. With pytest-xdist, 8 workers:
# the first run of each Triton kernel compiles it.
GPU_SAMPLE="${GPU_SAMPLE:-4}"
WORKERS=()
"$PYTHON" -c "import xdist" 2>/dev/null && WORKERS=(-n 8)
gpu_step "pytest -m gpu (1 in $GPU_SAMPLE)" 240 \
  "SHUFFLENET_GPU_SAMPLE=$GPU_SAMPLE $PYTHON -m pytest -q -p no:cacheprovider -m gpu --collect-only" -- \
  env SHUFFLENET_GPU_SAMPLE="$GPU_SAMPLE" "$PYTHON" -m pytest -p no:cacheprovider -m gpu -v -rfE --durations=15 \
  "${WORKERS[@]}"
# Triton tests not marked gpu run compiled on a GPU: the fused unit's in full (it has
# no CUDA C++ kernel), and the large-batch depthwise family in full (a float16 case
# failed once).
gpu_step "Triton v2_unit tests, large-batch depthwise tests (all cases)" 90 \
  "$PYTHON -m pytest -q -p no:cacheprovider tests/test_triton_v2_unit.py --collect-only" -- \
  "$PYTHON" -m pytest -p no:cacheprovider -v -rfE tests/test_triton_v2_unit.py \
  tests/test_cuda_extra.py::test_depthwise_conv2d_large_batch "${WORKERS[@]}"
gpu_step "compute-sanitizer memcheck + racecheck" 120 "bash -n tests/cuda_sanitize.sh" -- \
  env PYTHON="$PYTHON" tests/cuda_sanitize.sh
# The dry runs time one tiny case of each family on the CPU, so the bench's arguments,
# its output files and their renaming are checked too.
OPS_ARGS=(--ops channel_shuffle concat_shuffle pointwise_conv depthwise_conv2d units)
DRY_BENCH="--device cpu --quick --dtypes float32 --batch 1 --max-shapes 1 --reps 1 --compile-limit 0"
gpu_step "bench: ops and units (fp16; batch 256; eager baseline)" 100 \
  "bench_to ops ${OPS_ARGS[*]} $DRY_BENCH --layouts channels_last --directions fwd" -- \
  bash -c 'bench_to "$@"' _ ops --device cuda --quick "${OPS_ARGS[@]}" \
  --dtypes float16 --batch 256 --max-shapes 2 --compile-limit 0
gpu_step "bench: models (fp16; batch 32; torch.compile on the first)" 100 \
  "bench_to models --ops models $DRY_BENCH --layouts channels_last" -- \
  bash -c 'bench_to "$@"' _ models --device cuda --quick --ops models --dtypes float16 --batch 32 --compile-limit 1

write_summary
cat "$SUMMARY"
exit "$FAILED"
