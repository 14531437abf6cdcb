#!/usr/bin/env bash
# The robust-models study, end to end, with the project's own commands. Every step resumes where it
# stopped, so a later session (or a GPU node) runs the same script again to continue.
#   1. finish the three adversarial training runs (30 epochs of N-FGSM at 8/255, one-cycle; resumed from
#      reports/cifar10-robust/training where no local run exists) and ship their best checkpoints as the pretrained
#      tags resnet20.at, aig20.at and aig20.at_compute (their sha256 must then be pinned in aigrobust/models/registry.py)
#   2. attack them beside the standard models: AutoAttack's standard suite (exact gate gradients) at 8/255 (1000
#      images) and 2/255 (500); FGSM, PGD and APGD-CE under every gate gradient; the compute attack, its noise
#      control and gate flips; JPEG-75 with BPDA and the differentiable JPEG
#   3. the report: reports/cifar10-robust/study
# Smoke test (about a minute, tiny budgets, into runs/robust-smoke): SMOKE=1 STAGES=attacks bash scripts/study_robust.sh
# Two workers by default (WORKERS=N), one thread each; a killed worker leaves its run resumable, rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/robust}
TRAINING=${TRAINING:-runs/at}
STAGES=${STAGES:-"train attacks report"}
DEVICE=${DEVICE:-auto}
SMOKE=${SMOKE:-0}
source scripts/study_lib.sh  # stage, run_queue, run_workers
N_LARGE=1000; N_SMALL=500; N_CHECK=200; SUITE=(--suite standard); COMPUTE=compute-inflation; FLIP=gate-flip
# the compute attack's strength check on the models trained against it: more steps, another loss and schedule, restarts
COMPUTE_STEPS=compute-inflation:steps=300; COMPUTE_APGD=compute-inflation:gate_loss=hinge,schedule=apgd
COMPUTE_RESTARTS=compute-inflation:restarts=3,random_start=true
if [ "$SMOKE" = 1 ]; then
  RUNS=runs/robust-smoke; N_LARGE=8; N_SMALL=8; SUITE=(--attack apgd:steps=2)
  COMPUTE=compute-inflation:steps=2; FLIP=gate-flip:steps=2; N_CHECK=8; COMPUTE_STEPS=compute-inflation:steps=3
  COMPUTE_APGD=compute-inflation:steps=2,gate_loss=hinge,schedule=apgd
  COMPUTE_RESTARTS=compute-inflation:steps=2,restarts=2,random_start=true
fi

# 1. training, then shipping the best checkpoint (by PGD-10 on the held-out split) as a pretrained tag
RECIPE=(--data-dir "$DATA" --epochs 30 --schedule onecycle --lr 0.1 --weight-decay 5e-4 --batch-size 128 --seed 0
        --checkpoint-every 50)
declare -A TAG=([resnet20]=resnet20.at [aig20]=aig20.at [aig20_compute]=aig20.at_compute [resnet32]=resnet32.at
         [resnet14]=resnet14.at)
declare -A ARGS=([resnet20]="--model resnet20 --adversarial n-fgsm:eps=8/255"
                 [aig20]="--model aig20 --target-rate 0.6 --adversarial n-fgsm:eps=8/255"
                 [aig20_compute]="--model aig20 --target-rate 0.6 --adversarial n-fgsm:eps=8/255,compute=1 --compute-penalty 4"
                 [resnet32]="--model resnet32 --adversarial n-fgsm:eps=8/255"
                 [resnet14]="--model resnet14 --adversarial n-fgsm:eps=8/255")
# TRAIN_RUNS: which runs to continue (resnet32 and resnet14, the plain references above and below resnet20's FLOPs,
# train with the same recipe)
for run in ${TRAIN_RUNS:-resnet20 aig20 aig20_compute resnet32 resnet14}; do
  stage train || break
  out="$TRAINING/$run"
  if [ ! -f "$out/train_state.pt" ]; then
    mkdir -p "$TRAINING" && cp -r "reports/cifar10-robust/training/${TAG[$run]}" "$out"
  fi
  # shellcheck disable=SC2086  # ARGS holds several options
  aigrobust train ${ARGS[$run]} "${RECIPE[@]}" --out "$out" --resume
  cp "$out/best.safetensors" "aigrobust/pretrained/${TAG[$run]}.safetensors"
  echo "shipped ${TAG[$run]}: pin it in aigrobust/models/registry.py (PINNED_SHA256): $(sha256sum "$out/best.safetensors")"
done

# 2. attacks: a queue of runs, each resumable; WORKERS processes (default 2, one thread each) walk the same queue and
# each takes the next run no other worker holds (flock on a lock file beside the run), so runs finish one by one and
# the report can be written from those finished. The issue's settings: the standard suite with exact gate gradients,
# FGSM, PGD and APGD-CE under every gate gradient, the compute attack with its noise control and gate flips, JPEG-75.
if [ "$SMOKE" = 1 ]; then  # the smoke test attacks whatever checkpoints the runs hold now
  declare -A CKPT=([resnet20.at]="--checkpoint resnet20-at=$TRAINING/resnet20/best.safetensors"
                   [aig20.at]="--checkpoint aig20-at=$TRAINING/aig20/best.safetensors"
                   [aig20.at_compute]="--checkpoint aig20-at-compute=$TRAINING/aig20_compute/best.safetensors")
else
  declare -A CKPT=([resnet20.at]="--model resnet20.at" [aig20.at]="--model aig20.at"
                   [aig20.at_compute]="--model aig20.at_compute")
fi
ROBUST="${CKPT[resnet20.at]} ${CKPT[aig20.at]} ${CKPT[aig20.at_compute]}"
ROBUST_GATED="${CKPT[aig20.at]} ${CKPT[aig20.at_compute]}"
AIG32="--checkpoint aig32-from-at-deployed=reports/cifar10-robust/training/aig32-from-at-deployed/model.safetensors"
PAIR_32="--checkpoint resnet32.at=aigrobust/pretrained/resnet32.at.safetensors $AIG32"
AIG32_RSLAD="--checkpoint aig32-from-at-rslad=reports/cifar10-robust/training/aig32-from-at-rslad-t0.4/model.safetensors"
RSLAD_COMPUTE="--checkpoint aig20-rslad-compute=reports/cifar10-robust/training/aig20-rslad-compute/model.safetensors"
RSLAD_COMPUTE_T75="--checkpoint aig20-rslad-compute-t75=reports/cifar10-robust/training/aig20-rslad-compute-t75/model.safetensors"
TRADES="--checkpoint aig20-from-at-trades=reports/cifar10-robust/training/aig20-from-at-trades/model.safetensors"
common() { echo --data-dir "$DATA" --n-samples "$1" --batch-size 250 --device "$DEVICE"; }
# name | arguments (longest runs spread through the queue so two workers finish together)
QUEUE=(
  "standard-8-resnet20.at|${CKPT[resnet20.at]} ${SUITE[*]} --eps 8/255 $(common $N_LARGE)"
  "standard-8-plain|--model resnet20 --model aig20 ${SUITE[*]} --eps 8/255 $(common $N_LARGE)"
  "jpeg|$ROBUST --model resnet20 --model aig20 --defense jpeg:75 --defense-grad bpda --defense-grad diff --attack fgsm --attack pgd:steps=20 --eps 8/255 --early-exit $(common $N_SMALL)"
  "grads-8|$ROBUST_GATED --model aig20 --gate-grad all --attack fgsm --attack pgd:steps=20 --attack apgd --eps 8/255 $(common $N_SMALL)"
  "gates|$ROBUST --model aig20 --attack $COMPUTE --attack random-noise --attack $FLIP --eps 2/255 --eps 8/255 $(common $N_SMALL)"
  "compute-variants|${CKPT[aig20.at_compute]} ${CKPT[aig20.at]} --attack $COMPUTE_STEPS --attack $COMPUTE_APGD --attack $COMPUTE_RESTARTS --eps 8/255 --n-samples $N_CHECK --batch-size 200 --data-dir $DATA --device $DEVICE"
  "standard-8-aig20.at|${CKPT[aig20.at]} ${SUITE[*]} --eps 8/255 $(common $N_LARGE)"
  "standard-8-aig20.at_compute|${CKPT[aig20.at_compute]} ${SUITE[*]} --eps 8/255 $(common $N_LARGE)"
  "standard-2-resnet20.at|${CKPT[resnet20.at]} ${SUITE[*]} --eps 2/255 $(common $N_SMALL)"
  "standard-2-aig20.at|${CKPT[aig20.at]} ${SUITE[*]} --eps 2/255 $(common $N_SMALL)"
  "standard-2-aig20.at_compute|${CKPT[aig20.at_compute]} ${SUITE[*]} --eps 2/255 $(common $N_SMALL)"
  "standard-2-plain|--model resnet20 --model aig20 ${SUITE[*]} --eps 2/255 $(common $N_SMALL)"
  # the deeper pair: resnet32.at and aig32 fine-tuned from it by attacking the deployed network (shipped as
  # aig32.at_deployed), under exact and straight-through gate gradients, BatchNorm folded (the same outcomes, faster)
  "standard-8-32|$PAIR_32 ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  "aig32-from-at-deployed-500|$AIG32 --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 --fold-batchnorm $(common $N_SMALL)"
  "standard-2-32|$PAIR_32 ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 2/255 --fold-batchnorm $(common $N_SMALL)"
  # the best route's aig20 (robust distillation from resnet20.at on the deployed network) under the whole suite
  "aig20-from-at-rslad-500|--checkpoint aig20-from-at-rslad=reports/cifar10-robust/training/aig20-from-at-rslad/model.safetensors --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 $(common $N_SMALL)"
  "standard-8-aig20-rslad|--checkpoint aig20-from-at-rslad=reports/cifar10-robust/training/aig20-from-at-rslad/model.safetensors ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  # aig32 by the same route from resnet32.at, target rate 0.4: clean FLOPs at or below resnet20's
  "aig32-from-at-rslad-500|$AIG32_RSLAD --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 --fold-batchnorm $(common $N_SMALL)"
  "standard-8-aig32-rslad|$AIG32_RSLAD ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  # the best route's model fine-tuned against the compute attack as well (compute=1, penalty 4, three epochs)
  "aig20-rslad-compute-500|$RSLAD_COMPUTE --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 $(common $N_SMALL)"
  "compute-variants-rslad-compute|$RSLAD_COMPUTE --attack $COMPUTE_STEPS --attack $COMPUTE_APGD --attack $COMPUTE_RESTARTS --eps 8/255 --n-samples $N_CHECK --batch-size 200 --data-dir $DATA --device $DEVICE"
  "standard-8-aig20-rslad-compute|$RSLAD_COMPUTE ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  # the plain line below resnet20's FLOPs, where the gated models sit: resnet14.at, the same recipe as resnet20.at
  "standard-8-resnet14.at|--model resnet14.at ${SUITE[*]} --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  "standard-2-resnet14.at|--model resnet14.at ${SUITE[*]} --eps 2/255 --fold-batchnorm $(common $N_SMALL)"
  # the compute fine-tune with its target at the route's own FLOPs (target rate 0.75 instead of 0.6)
  "aig20-rslad-compute-t75-500|$RSLAD_COMPUTE_T75 --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 $(common $N_SMALL)"
  "compute-variants-rslad-compute-t75|$RSLAD_COMPUTE_T75 --attack $COMPUTE_STEPS --attack $COMPUTE_APGD --attack $COMPUTE_RESTARTS --eps 8/255 --n-samples $N_CHECK --batch-size 200 --data-dir $DATA --device $DEVICE"
  "standard-8-aig20-rslad-compute-t75|$RSLAD_COMPUTE_T75 ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
  # TRADES on the deployed route: the compute attack on 500 images, the whole suite on 1000
  "aig20-from-at-trades-500|$TRADES --attack apgd --attack $COMPUTE --attack random-noise --eps 8/255 $(common $N_SMALL)"
  "standard-8-aig20-trades|$TRADES ${SUITE[*]} --gate-grad exact --gate-grad straight-through --eps 8/255 --fold-batchnorm $(common $N_LARGE)"
)
if stage attacks; then
  run_workers
fi

# 3. the findings (the goals and answers) and the report, from the runs finished so far, copied (records,
# run.json, summaries) into reports/cifar10-robust/runs/study so that the report is rebuilt from committed files (the
# runs listed first win where two hold the same sample)
if stage report; then
  PUBLISHED=${PUBLISHED:-reports/cifar10-robust/runs/study}
  [ "$SMOKE" = 1 ] && PUBLISHED=$RUNS/published
  finished=(); for entry in "${QUEUE[@]}"; do
    name=${entry%%|*}
    [ -f "$RUNS/$name/records.csv.gz" ] || continue
    mkdir -p "$PUBLISHED/$name"
    cp "$RUNS/$name"/{run.json,records.csv.gz,summary.csv,summary.json} "$PUBLISHED/$name/"
    finished+=("$PUBLISHED/$name")
  done
  python scripts/robust_findings.py "${finished[@]}" --out "$PUBLISHED/findings.md" \
    $([ "$SMOKE" = 1 ] && echo --plain-at resnet20-at --gated-at aig20-at --compute-at aig20-at-compute)
  aigrobust report "${finished[@]}" --preface "$PUBLISHED/findings.md" \
    --out "${REPORT_DIR:-reports/cifar10-robust/study}" --title "CIFAR-10: robust gated and plain ResNets"
fi
