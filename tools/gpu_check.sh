#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests (tests/test_cuda.py), then benchmarks/gpu.py.
# Usage: bash tools/gpu_check.sh [OUTPUT_DIR]   (default: gpu-check/)
# Writes OUTPUT_DIR/tests.log, benchmark.log and gpu.md (the benchmark's markdown, to append to
# docs/performance.md). PYTHON names the interpreter (default .venv/bin/python); TEST_SECONDS and
# BENCH_SECONDS bound the two parts (the benchmark fits its compiled variants into BENCH_SECONDS).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
python=${PYTHON:-.venv/bin/python}
test_seconds=${TEST_SECONDS:-300}
bench_seconds=${BENCH_SECONDS:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
timeout "$test_seconds" "$python" -m pytest -p no:cacheprovider -n 5 -rA tests/test_cuda.py 2>&1 | tee "$out/tests.log" || status=1
# The budget covers the parts; the margin lets the last part end.
timeout $((bench_seconds + 120)) "$python" benchmarks/gpu.py --budget "$bench_seconds" --output "$out/gpu.md" 2>&1 \
    | tee "$out/benchmark.log" || status=1
exit "$status"
