#!/usr/bin/env bash
# The CIFAR-10 study, end to end, with the project's own commands. Every step resumes where it stopped.
#   1. train resnet20 and aig20 (target rate 0.7), same recipe and budget (about 2 min per epoch each on 2 cores)
#   2. ship their weights as pretrained entries (skipped where shipped already, unless RETRAIN=1)
#   3. attack our models and the external akamaster resnet20/resnet56 on the 1000 real test images
#   4. answer the study's questions from the records, write reports/cifar10 and the CI baseline
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/study}
PAIRS=${PAIRS:-"ours external"}  # attack only one pair with PAIRS=ours (e.g. while the other runs elsewhere)
REPORT=${REPORT:-1}              # REPORT=0 stops after the attacks
STAGES=${STAGES:-"train attacks standard standard-jpeg why"}  # e.g. STAGES=standard REPORT=0: the undefended AutoAttack runs
DEVICE=${DEVICE:-auto}           # DEVICE=cuda runs the attacks on a GPU (the same seeds per sample; float rounding differs from the CPU, so a few borderline samples can too)
stage() { [[ " $STAGES " == *" $1 "* ]]; }
RECIPE=(--data-dir "$DATA" --epochs 30 --schedule onecycle --lr 0.1 --weight-decay 5e-4 --batch-size 128 --seed 0)

# 1. training (the same recipe and budget for both; --resume continues an interrupted run) and 2. shipping the
#    weights (their metadata carries recipe, data sha256 and held-out accuracy). Weights already shipped are kept
#    unless RETRAIN=1; reports/cifar10/training/MODEL holds the shipped runs' per-epoch history.
RETRAIN=${RETRAIN:-0}
resume_flag() { [ -f "$1/train_state.pt" ] && echo --resume || true; }
for m in resnet20 aig20; do
  stage train || break
  if [ "$RETRAIN" != 1 ] && [ -f "aigrobust/pretrained/$m.safetensors" ]; then continue; fi
  # a local run whose weights and state disagree (killed between the two writes of an older version) is replaced
  if [ -f "$RUNS/$m/train_state.pt" ] && [ -f "$RUNS/$m/last.safetensors" ] && [ ! -f "$RUNS/$m/model.safetensors" ] \
     && ! python scripts/snapshot_training.py "$RUNS/$m" --check-only >/dev/null; then
    rm -f "$RUNS/$m/train_state.pt"
  fi
  extra=(); [ $m = aig20 ] && extra=(--target-rate 0.7)
  aigrobust -v train --model $m "${extra[@]}" "${RECIPE[@]}" --out "$RUNS/$m" $(resume_flag "$RUNS/$m")
  cp "$RUNS/$m/model.safetensors" "aigrobust/pretrained/$m.safetensors"
done

OURS=(--checkpoint resnet20=aigrobust/pretrained/resnet20.safetensors
      --checkpoint aig20=aigrobust/pretrained/aig20.safetensors)
EXTERNAL=(--checkpoint akamaster-resnet20="$DATA/pretrained/resnet20-12fca82f.th"
          --checkpoint akamaster-resnet56="$DATA/pretrained/resnet56-4bfd9763.th")
DATA_ARGS=(--data-dir "$DATA" --n-samples 1000 --batch-size 250 --device "$DEVICE")
JPEG=(--defense jpeg:75 --defense jpeg:50 --defense-grad oblivious --defense-grad bpda --defense-grad diff)
resume_if() { [ -f "$1/run.json" ] && [ ! -f "$1/records.csv.gz" ] && echo --resume || true; }
# a finished run whose settings a new run may copy instead of attacking again (aigrobust attack --reuse-from)
reuse_if_done() { [ -f "$1/records.csv.gz" ] && echo --reuse-from "$1"; }
run_attack() { local out=$1; shift; [ -f "$out/records.csv.gz" ] || aigrobust attack "$@" --out "$out" $(resume_if "$out"); }

# 3. attacks, each for our pair (gate gradients: exact, straight-through, soft and their worst) and the outside pair.
#    Runs are split by setting so each can run alone and resume; `aigrobust report` joins them (a run listed
#    earlier wins where two hold the same sample, e.g. the undefended reference rows every defense run repeats).
for who in $PAIRS; do
  stage attacks || break
  if [ $who = ours ]; then M=("${OURS[@]}" --gate-grad all); else M=("${EXTERNAL[@]}"); fi
  # FGSM sweep, the paper's protocol, with and without JPEG
  run_attack "$RUNS/fgsm-$who" "${M[@]}" "${DATA_ARGS[@]}" --defense none "${JPEG[@]}" --attack fgsm \
    --eps 1/255 --eps 2/255 --eps 4/255 --eps 8/255 --eps 16/255
  # the stronger attacks, undefended (--early-exit: each attack works on what the previous ones left standing)
  run_attack "$RUNS/strong-$who" "${M[@]}" "${DATA_ARGS[@]}" --attack fgsm --attack pgd:steps=20 \
    --attack apgd:steps=50 --eps 2/255 --eps 8/255 --early-exit
  # the same chain against JPEG: oblivious, BPDA and differentiable JPEG
  run_attack "$RUNS/strong-jpeg-$who" "${M[@]}" "${DATA_ARGS[@]}" "${JPEG[@]}" --attack fgsm --attack pgd:steps=20 \
    --attack apgd:steps=50 --eps 2/255 --eps 8/255 --early-exit
  # black box: Square does not use gradients, so it checks the gradient attacks for masking
  run_attack "$RUNS/square-$who" "${M[@]/all/exact}" "${DATA_ARGS[@]}" --attack square:n_queries=1000 --eps 8/255
done
# AutoAttack's standard protocol (APGD-CE, APGD-T, FAB-T, Square-5000, early exit), one run per model so each
# finishes and resumes alone; undefended (stage standard), then against JPEG (stage standard-jpeg: the long part)
declare -A STANDARD_MODELS=([akamaster-resnet20]="${EXTERNAL[1]}" [akamaster-resnet56]="${EXTERNAL[3]}"
                            [resnet20]="${OURS[1]}" [aig20]="${OURS[3]}")
for m in akamaster-resnet20 akamaster-resnet56 resnet20 aig20; do
  stage standard || break
  grad=(); [ $m = aig20 ] && grad=(--gate-grad exact)  # the surrogate gate gradients run after every model
  run_attack "$RUNS/standard-$m" --checkpoint "${STANDARD_MODELS[$m]}" "${grad[@]}" "${DATA_ARGS[@]}" \
    --suite standard --eps 2/255 --eps 8/255
done
# (its units are the undefended reference of standard-jpeg-aig20-surrogates below: whichever finishes first, the other
# copies them)
stage standard && run_attack "$RUNS/standard-aig20-surrogates" --checkpoint "${STANDARD_MODELS[aig20]}" \
  --gate-grad straight-through --gate-grad soft "${DATA_ARGS[@]}" --suite standard --eps 2/255 --eps 8/255 \
  $(reuse_if_done "$RUNS/standard-jpeg-aig20-surrogates")
# against JPEG, like the undefended runs: the gated-vs-plain pair first, aig20's surrogate gate gradients last;
# the undefended reference every JPEG run holds is copied from the undefended run where it finished (the same
# bytes: per-sample seeds): only the JPEG settings are attacked
STANDARD_JPEG=(--defense jpeg:75 --defense jpeg:50 --defense-grad bpda --defense-grad diff --suite standard
               --eps 2/255 --eps 8/255)
for m in resnet20 aig20 akamaster-resnet20 akamaster-resnet56; do
  stage standard-jpeg || break
  grad=(); [ $m = aig20 ] && grad=(--gate-grad exact)
  run_attack "$RUNS/standard-jpeg-$m" --checkpoint "${STANDARD_MODELS[$m]}" "${grad[@]}" "${DATA_ARGS[@]}" \
    "${STANDARD_JPEG[@]}" $(reuse_if_done "$RUNS/standard-$m")
done
stage standard-jpeg && run_attack "$RUNS/standard-jpeg-aig20-surrogates" --checkpoint "${STANDARD_MODELS[aig20]}" \
  --gate-grad straight-through --gate-grad soft "${DATA_ARGS[@]}" "${STANDARD_JPEG[@]}" \
  $(reuse_if_done "$RUNS/standard-aig20-surrogates")
# attacks on the gates themselves
stage attacks && [[ " $PAIRS " == *" ours "* ]] && run_attack "$RUNS/gates" --checkpoint aig20=aigrobust/pretrained/aig20.safetensors "${DATA_ARGS[@]}" --gate-grad all \
  --attack gate-flip --attack compute-inflation --attack compute-inflation-keep-label --eps 2/255 --eps 8/255
# the compute attack at full strength beside its control, random noise of the same norm; and one universal
# perturbation fitted on training images, judged on unseen test images
stage attacks && [[ " $PAIRS " == *" ours "* ]] && run_attack "$RUNS/compute" --model aig20 "${DATA_ARGS[@]}" \
  --attack compute-inflation --attack random-noise --eps 2/255 --eps 8/255
UNIVERSAL=reports/cifar10-robust/universal-aig20-8
stage attacks && [ ! -f $UNIVERSAL/universal.json ] && aigrobust universal --model aig20 --eps 8/255 --fit 1024 \
  --steps 50 --n-samples 500 --data-dir "$DATA" --out $UNIVERSAL

# 5. why our models keep ~23% at 2/255 (stage why): margins, the JPEG fine-tune and its dose on akamaster's resnet20,
#    then our recipe at other lengths and with akamaster's weight decay (each a resumable training run, about 80 s per
#    epoch alone on 2 cores), added to the same file
WHY=reports/cifar10/robustness_gap_factors.json
if stage why; then
  [ -f $WHY ] || python scripts/robustness_gap_factors.py --out $WHY --dose 50 --dose 30
  for arm in "5 5e-4" "10 5e-4" "40 5e-4" "10 1e-4"; do
    read -r epochs decay <<< "$arm"
    python scripts/robustness_gap_factors.py --out $WHY --has-recipe-arm "$epochs" "$decay" && continue
    out="$RUNS/recipe-resnet20-e$epochs-wd$decay"
    # the shipped recipe with one factor changed (a repeated option's last value wins)
    [ -f "$out/model.safetensors" ] || aigrobust -v train --model resnet20 "${RECIPE[@]}" --epochs "$epochs" \
      --weight-decay "$decay" --out "$out" $(resume_flag "$out")
    python scripts/robustness_gap_factors.py --out $WHY --recipe-arm "$out/model.safetensors"
  done
fi

[ "$REPORT" = 1 ] || exit 0
# 4. the findings, the report and the CI baseline (200 images, under 3 minutes on 2 cores)
STUDY_RUNS=()
for kind in fgsm strong strong-jpeg square; do STUDY_RUNS+=("$RUNS/$kind-ours" "$RUNS/$kind-external"); done
STUDY_RUNS+=("$RUNS/gates" "$RUNS/compute")
# the undefended standard runs before the JPEG ones, whose undefended reference rows repeat them (first run wins)
for run in "$RUNS"/standard-*; do [[ $run != */standard-jpeg-* ]] && [ -f "$run/records.csv.gz" ] && STUDY_RUNS+=("$run"); done
for run in "$RUNS"/standard-jpeg-*; do [ -f "$run/records.csv.gz" ] && STUDY_RUNS+=("$run"); done
[ -f $WHY ] || { echo "$WHY is missing: run the why stage (STAGES=why)" >&2; exit 1; }
python scripts/study_findings.py "${STUDY_RUNS[@]}" --train-log reports/cifar10/training/aig20/log.jsonl \
  --gap-factors reports/cifar10/robustness_gap_factors.json --universal $UNIVERSAL/universal.json --out "$RUNS/findings.md" --headline-out "$RUNS/headline.md"
aigrobust report "${STUDY_RUNS[@]}" --preface "$RUNS/findings.md" --out reports/cifar10 \
  --title "ConvNet-AIG vs ResNet on CIFAR-10: robustness and gate stability"
# the per-sample records travel with the report, so every number in it can be recomputed from the repository
for run in "${STUDY_RUNS[@]}"; do
  mkdir -p "reports/cifar10/records/$(basename "$run")"
  cp "$run/records.csv.gz" "$run/run.json" "reports/cifar10/records/$(basename "$run")/"
done
run_attack "$RUNS/ci" --checkpoint resnet20=aigrobust/pretrained/resnet20.safetensors \
  --checkpoint aig20=aigrobust/pretrained/aig20.safetensors \
  --checkpoint akamaster-resnet20="$DATA/pretrained/resnet20-12fca82f.th" --data-dir "$DATA" --n-samples 200 \
  --batch-size 200 --attack fgsm --attack pgd:steps=10 --eps 2/255 --eps 8/255 --gate-grad exact \
  --gate-grad straight-through --defense jpeg:75 --defense-grad bpda
aigrobust check --baseline reports/ci/baseline.json --init-from "$RUNS/ci" --update  # replaces the committed baseline
