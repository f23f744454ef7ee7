#!/usr/bin/env bash
# Time dpflows on a lent accelerator in one short run (≤ 5 min): Sinkhorn n = m = 16k, d = 64 against the
# HBM roofline, the DP-SW step, SHK at n = 1e5, then the scaling table as far as the deadline allows.
# Run from the repository root on the device machine (JAX with GPU support installed there):
#   bash benchmarks/accelerator.sh            # writes $OUT/accelerator.md when OUT is set, else prints
# On a CPU machine, `bash benchmarks/accelerator.sh --smoke` runs the same sections at toy sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # report what each step needs, not a 75% pool
if [ -n "${OUT:-}" ]; then
  timeout 300 "$PY" benchmarks/accelerator.py "$@" | tee "$OUT/accelerator.md"
else
  timeout 300 "$PY" benchmarks/accelerator.py "$@"
fi
