#!/usr/bin/env bash
# The GPU check (issues 13 and 34), one script, under 5 minutes: the throughput and ratio figures of
# benchmarks/gpu_check.py first (what a GPU session is for), then the CUDA tests. Each figure is appended to
# RESULTS_DIR/figures.txt the moment it is measured and each step has its own time limit, so a job killed at any
# minute keeps what it measured; a hung test dumps its stack (faulthandler) after 60 s.
# It runs from a checkout without installing (PYTHONPATH=.); on a node that lacks foolbox, eagerpy or kornia,
# install the wheelhouse (scripts/wheelhouse.sh) into a temporary target first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash scripts/gpu_check.sh RESULTS_DIR              # on a GPU machine; paste its figures into benchmarks/README.md
#   bash scripts/gpu_check.sh --dry-run [RESULTS_DIR]  # anywhere: the same code on the CPU, tiny models
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
dry=""
if [ "${1:-}" = "--dry-run" ]; then dry="--dry-run"; shift; fi
results=${1:-}
if [ -z "$results" ] && [ -z "$dry" ]; then
  echo "usage: bash scripts/gpu_check.sh RESULTS_DIR | --dry-run [RESULTS_DIR]" >&2
  exit 2
fi
[ -z "$results" ] || mkdir -p "$results" || exit 2
note() { echo "$*"; [ -z "$results" ] || echo "$*" >> "$results/steps.txt"; }
step() { note "[$(date +%T) +${SECONDS}s] $*"; }
if [ -n "$dry" ]; then
  exec "$PYTHON" -m benchmarks.gpu_check --dry-run ${results:+--results "$results"}
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')" || exit 1
status=0
step "figures (benchmarks.gpu_check)"
timeout -k 10 180 "$PYTHON" -m benchmarks.gpu_check --results "$results" || { status=$?; step "figures failed ($status)"; }
step "CUDA tests (tests/test_cuda.py -m cuda)"
timeout -k 10 90 "$PYTHON" -m pytest -v -m cuda -p no:cacheprovider -o faulthandler_timeout=60 tests/test_cuda.py \
  2>&1 | tee "$results/cuda_tests.txt" || { status=$?; step "CUDA tests failed ($status)"; }
step "done (exit $status)"
exit $status
