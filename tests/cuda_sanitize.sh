#!/usr/bin/env bash
# Runs a subset of the GPU tests under compute-sanitizer: memcheck (out-of-bounds
# and misaligned accesses, leaks of device errors) and racecheck (shared-memory
# hazards between threads of a block). Exits non-zero when either tool reports
# an error or a test fails.
#
# Usage: tests/cuda_sanitize.sh [extra pytest args]
# Env:   PYTHON (default: python), SANITIZER (default: compute-sanitizer on PATH or
#        $CUDA_HOME/bin), SANITIZE_K (pytest -k expression selecting memcheck's subset
#        of tests/test_cuda_extra.py), RACE_K and RACE_SAMPLE (racecheck's subset of the
#        C++ CUDA kernels' small-shape tests: a -k expression, and every N-th
#        parametrisation of each test).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
SANITIZER="${SANITIZER:-$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")}"
# The > 2^31-element tests move 8+ GiB: far too slow under instrumentation. CUDA graph
# capture needs the caching allocator, which is off here (below).
SANITIZE_K="${SANITIZE_K:-not 2_31 and not graph and (nchw or cl or deterministic) and not bfloat16}"
# racecheck tracks every shared-memory access: one large-batch test took over 70 s on
# an H200 (2026-11-30), so it runs a spread of the small-shape tests of the kernels
# that stage tiles in shared memory (channel shuffle, depthwise, pointwise).
RACE_K="${RACE_K:-cpp-cuda and (channel_shuffle or depthwise_conv2d or pointwise_conv) and not dtypes and not half}"
RACE_SAMPLE="${RACE_SAMPLE:-64}"

if [[ ! -x "$SANITIZER" ]]; then
  echo "cuda_sanitize.sh: compute-sanitizer not found (set SANITIZER)" >&2
  exit 2
fi

# Without the caching allocator every tensor is its own allocation, so memcheck
# sees accesses past a tensor's end instead of into a neighbouring cached block.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1

status=0
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool"
  extra=()
  tests=(tests/test_cuda_extra.py -k "$SANITIZE_K")
  if [[ "$tool" == "racecheck" ]]; then
    extra=(--racecheck-report hazard)
    tests=(tests/test_ops_forward.py tests/test_ops_backward.py -k "$RACE_K")
  fi
  if ! SHUFFLENET_GPU_SAMPLE="$([[ "$tool" == racecheck ]] && echo "$RACE_SAMPLE" || echo 1)" \
      "$SANITIZER" --tool "$tool" --error-exitcode 99 --target-processes all "${extra[@]}" \
      "$PYTHON" -m pytest -m gpu -x -q -p no:cacheprovider "${tests[@]}" "$@"; then
    echo "cuda_sanitize.sh: $tool reported errors or a test failed" >&2
    status=1
  fi
done
exit "$status"
