#!/usr/bin/env bash
# The GPU check (issue 13), one script: the CUDA tests, then the throughput and ratio figures of
# benchmarks/gpu_check.py. On a CUDA machine it needs under 8 minutes; `--dry-run` runs the same code on the CPU
# with tiny models and a few images (the default test suite does, so the script cannot rot).
#   bash scripts/gpu_check.sh            # on a GPU machine; paste its output into benchmarks/README.md
#   bash scripts/gpu_check.sh --dry-run  # anywhere
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
  python -m benchmarks.gpu_check --dry-run
  exit 0
fi
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')"
python -m pytest -q -m cuda -p no:cacheprovider
python -m benchmarks.gpu_check
