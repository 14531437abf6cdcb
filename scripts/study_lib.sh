# Sourced by the study scripts (study_robust.sh, study_dynamic.sh): their stages and the resumable run queue.
# The sourcing script sets QUEUE (entries "name|arguments of aigrobust attack"), RUNS (where the run folders go)
# and STAGES (the stages to run, e.g. "train attacks report") before calling these.

stage() { [[ " $STAGES " == *" $1 "* ]]; }

# One worker: every unfinished run of QUEUE that no other worker holds (flock per run), in queue order; a run with
# a run.json resumes. A stopped run says so and stays resumable: rerun the script to continue.
run_queue() {
  local entry name out
  for entry in "${QUEUE[@]}"; do
    name=${entry%%|*}; out="$RUNS/$name"
    [ -f "$out/records.csv.gz" ] && continue
    mkdir -p "$RUNS"
    (
      flock -n 9 || exit 0  # another worker holds it
      [ -f "$out/records.csv.gz" ] && exit 0
      resume=(); [ -f "$out/run.json" ] && resume=(--resume)
      echo "$(date -u +%FT%TZ) worker $1: $name"
      # shellcheck disable=SC2086  # the entry's arguments are words
      OMP_NUM_THREADS=1 aigrobust attack ${entry#*|} --out "$out" "${resume[@]}"
    ) 9>"$RUNS/.$name.queue-lock" || echo "$(date -u +%FT%TZ) worker $1: $name stopped; rerun to resume" >&2
  done
}

# WORKERS workers (default 2, one thread each) walk the queue together; returns when every run has finished or stopped.
run_workers() {
  local w
  for ((w = 1; w <= ${WORKERS:-2}; w++)); do run_queue "$w" & sleep 2; done
  wait
}
