#!/usr/bin/env bash
# The GPU check (issue 13), one script: the throughput and ratio figures of benchmarks/gpu_check.py first (they are
# what a GPU session is for), then the CUDA tests. Each step is timestamped and has its own time limit, so a step
# that hangs is named and cannot eat the others' time; a hung test dumps its stack (faulthandler) after 60 s.
# On a CUDA machine it should need under 8 minutes; `--dry-run` runs the same code on the CPU with tiny models and
# a few images (the default test suite does, so the script cannot rot).
#   bash scripts/gpu_check.sh            # on a GPU machine; paste its output into benchmarks/README.md
#   bash scripts/gpu_check.sh --dry-run  # anywhere
#   PYTHON=python3 bash scripts/gpu_check.sh   # where `python` is not the interpreter that holds torch
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
step() { echo "[$(date +%T) +${SECONDS}s] $*"; }
if [ "${1:-}" = "--dry-run" ]; then
  exec "$PYTHON" -m benchmarks.gpu_check --dry-run
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')" || exit 1
status=0
step "figures (benchmarks.gpu_check)"
PYTHONUNBUFFERED=1 timeout -k 10 300 "$PYTHON" -m benchmarks.gpu_check || { status=$?; step "figures failed ($status)"; }
step "CUDA tests (tests/test_cuda.py -m cuda)"
timeout -k 10 180 "$PYTHON" -m pytest -v -m cuda -p no:cacheprovider -o faulthandler_timeout=60 tests/test_cuda.py \
  || { status=$?; step "CUDA tests failed ($status)"; }
step "done (exit $status)"
exit $status
