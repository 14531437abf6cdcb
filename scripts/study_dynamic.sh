#!/usr/bin/env bash
# Both families of dynamic inference side by side, with the same attacks, records and report: the early-exit
# sdn20 (SDN's internal classifiers on ResNet-20) beside the gated aig20 and the plain resnet20, on the standard
# backbone and on the adversarially trained one. Every step resumes where it stopped; rerun to continue.
#   1. exits-only training of sdn20.std (on resnet20) and sdn20.at (on resnet20.at, N-FGSM 8/255 on the deployed
#      network), each threshold calibrated on the 1000 held-out training images for at most 1 point of accuracy
#   2. attacks: the standard suite at 8/255 and 2/255 (early-exit and gated models under the exact and the
#      straight-through gradient, worst case per image), FGSM and PGD-20 for exit/gate stability, the compute attack
#      (default objective, and DeepSloth's for exits) with its noise control, the universal compute perturbation
#   3. the report: reports/cifar10-dynamic/study, with the robust models' standard-suite records taken from the
#      robust study (reports/cifar10-robust/runs/study) where they were already run
# Two workers by default (WORKERS=N), one thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/dynamic}
TRAINING=${TRAINING:-runs/ee}
STAGES=${STAGES:-"train attacks report"}
source scripts/study_lib.sh  # stage, run_queue, run_workers
N_LARGE=${N_LARGE:-1000}; N_SMALL=${N_SMALL:-500}

# 1. exits-only training (the tags' weights are then copied into aigrobust/pretrained and pinned)
EXITS=(--exits-only --schedule cosine --lr 0.1 --weight-decay 5e-4 --batch-size 128 --seed 0 --val-samples 1000
       --data-dir "$DATA")
if stage train; then
  aigrobust train --model sdn20 --init resnet20 "${EXITS[@]}" --epochs 12 --out "$TRAINING/sdn20-std" --resume
  aigrobust train --model sdn20 --init resnet20.at --adversarial n-fgsm:eps=8/255 --inner-network deployed \
    "${EXITS[@]}" --epochs 8 --out "$TRAINING/sdn20-at" --resume
fi

# 2. attacks: a queue of resumable runs that WORKERS processes walk (flock per run)
common() { echo --data-dir "$DATA" --n-samples "$1" --batch-size 250; }
GRADS="--gate-grad exact --gate-grad straight-through"
STANDARD="--model resnet20 --model aig20 --model sdn20.std"
QUEUE=(
  "standard-8|$STANDARD --suite standard $GRADS --eps 8/255 $(common $N_LARGE)"
  "standard-2|$STANDARD --suite standard $GRADS --eps 2/255 $(common $N_SMALL)"
  "stability|$STANDARD --model resnet20.at --model aig20.at --model sdn20.at --attack fgsm --attack pgd:steps=20 --eps 2/255 --eps 8/255 $(common $N_SMALL)"
  "compute|--model aig20 --model sdn20.std --model aig20.at --model sdn20.at --attack compute-inflation --attack random-noise --attack gate-flip --eps 2/255 --eps 8/255 $(common $N_SMALL)"
  "deepsloth|--model sdn20.std --model sdn20.at --attack compute-inflation:gate_loss=uniform --eps 2/255 --eps 8/255 $(common $N_SMALL)"
  "standard-8-robust|--model sdn20.at --suite standard $GRADS --eps 8/255 $(common $N_LARGE)"
  "standard-2-robust|--model sdn20.at --suite standard $GRADS --eps 2/255 $(common $N_SMALL)"
)
if stage attacks; then
  run_workers
  for model in sdn20.std aig20; do  # the universal compute perturbation, fitted on 500 images, judged on 500 others
    out="$RUNS/universal-$model"
    [ -f "$out/universal.json" ] || OMP_NUM_THREADS=1 aigrobust universal --model "$model" --eps 8/255 \
      --fit 500 --n-samples 500 --data-dir "$DATA" --out "$out"
  done
fi

# 3. the report, from the runs finished so far, copied into reports/cifar10-dynamic/runs (the committed inputs)
if stage report; then
  PUBLISHED=${PUBLISHED:-reports/cifar10-dynamic/runs}
  finished=()
  for entry in "${QUEUE[@]}"; do
    name=${entry%%|*}
    [ -f "$RUNS/$name/records.csv.gz" ] || continue
    mkdir -p "$PUBLISHED/$name"
    cp "$RUNS/$name"/{run.json,records.csv.gz,summary.csv,summary.json} "$PUBLISHED/$name/"
    finished+=("$PUBLISHED/$name")
  done
  ROBUST=reports/cifar10-robust/runs/study
  for name in standard-8-resnet20.at standard-8-aig20.at standard-2-resnet20.at standard-2-aig20.at; do
    [ -f "$ROBUST/$name/records.csv.gz" ] && finished+=("$ROBUST/$name")
  done
  universal=(); for u in "$RUNS"/universal-*/universal.json; do
    [ -f "$u" ] || continue
    mkdir -p "$PUBLISHED/$(basename "$(dirname "$u")")" && cp "$u" "$PUBLISHED/$(basename "$(dirname "$u")")/"
    universal+=(--universal "$PUBLISHED/$(basename "$(dirname "$u")")/universal.json")
  done
  python scripts/dynamic_findings.py "${finished[@]}" "${universal[@]}" --out "$PUBLISHED/findings.md"
  aigrobust report "${finished[@]}" --preface "$PUBLISHED/findings.md" \
    --out reports/cifar10-dynamic/study --title "CIFAR-10: early-exit, gated and plain ResNets"
fi
