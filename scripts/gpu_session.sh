#!/usr/bin/env bash
# The long runs, in order of value, for a GPU allocation of any length. Run after scripts/gpu_check.sh.
#   bash scripts/gpu_session.sh RESULTS_DIR [DATA_DIR]
# DATA_DIR (default ../shared/data) holds cifar10_train_jpeg75.npz and cifar10_test_sample.npz. Every run writes
# its checkpoints, log and records under RESULTS_DIR as it goes and resumes from there with --resume, so whatever
# minute the job is killed, what finished is kept and the rest continues on any machine (a CPU too):
#   1-3. robust training: resnet20.at, aig20.at, aig20.at_compute, 30 epochs of N-FGSM at 8/255, one-cycle
#        (the recipe of reports/cifar10-robust/training), checkpoint every 50 steps;
#   4.   the standard suite (APGD-CE, APGD-T, FAB-T, Square) at 8/255 on the 1000 test images, each trained model;
#   5.   the strongest compute attack on the gated ones at 2/255 and 8/255.
# What it keeps is small: safetensors checkpoints, the resume state (a few MB each), logs and compressed records.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
results=${1:-}
data=${2:-../shared/data}
[ -n "$results" ] || { echo "usage: bash scripts/gpu_session.sh RESULTS_DIR [DATA_DIR]" >&2; exit 2; }
mkdir -p "$results" || exit 2
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$results/session.txt"; }
recipe=(--data-dir "$data" --epochs 30 --schedule onecycle --lr 0.1 --weight-decay 5e-4 --batch-size 128 --seed 0
        --checkpoint-every 50 --resume)
train() {  # NAME MODEL EXTRA...
  local name=$1 model=$2; shift 2
  log "train $name"
  "$PYTHON" -m aigrobust train --model "$model" --out "$results/train/$name" "${recipe[@]}" "$@" \
    >> "$results/train-$name.log" 2>&1 || log "train $name stopped ($?)"
}
train resnet20.at resnet20 --adversarial n-fgsm:eps=8/255
train aig20.at aig20 --target-rate 0.6 --adversarial n-fgsm:eps=8/255
train aig20.at_compute aig20 --target-rate 0.6 --adversarial n-fgsm:eps=8/255,compute=1 --compute-penalty 4
for name in resnet20.at aig20.at aig20.at_compute; do
  [ -f "$results/train/$name/model.safetensors" ] || continue
  log "standard suite $name"
  "$PYTHON" -m aigrobust attack --checkpoint "$name=$results/train/$name/model.safetensors" --data-dir "$data" \
    --n-samples 1000 --batch-size 500 --suite standard --eps 8/255 --out "$results/standard/$name" --resume \
    >> "$results/standard-$name.log" 2>&1 || log "standard suite $name stopped ($?)"
done
for name in aig20 aig20.at aig20.at_compute; do
  source=(--model "$name")
  [ "$name" = aig20 ] || source=(--checkpoint "$name=$results/train/$name/model.safetensors")
  [ "$name" = aig20 ] || [ -f "$results/train/$name/model.safetensors" ] || continue
  log "compute attack $name"
  "$PYTHON" -m aigrobust attack "${source[@]}" --data-dir "$data" --n-samples 1000 --batch-size 500 \
    --attack compute-inflation --eps 2/255 --eps 8/255 --out "$results/compute/$name" --resume \
    >> "$results/compute-$name.log" 2>&1 || log "compute attack $name stopped ($?)"
done
log "session done"
