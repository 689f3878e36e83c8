#!/bin/bash
# One row of the study "Does pretraining learn?" (README): SkeletonCLR on the joint stream,
# or the random-init baseline, then linear and KNN evaluation (BN statistics recomputed on
# the train split for both). Appends one JSON line to results.jsonl beside this script.
#
#   run_one.sh NAME STORE BENCHMARK SEED pre|random [--set key=value ...]
#
# A pretraining run interrupted (Ctrl-C, a kill) continues with --resume when rerun.
set -euo pipefail
NAME=$1; STORE=$2; BENCH=$3; SEED=$4; MODE=$5; shift 5
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIGS=$HERE/../../configs
R=${RUNS:-$HERE/runs}/$NAME-s$SEED
COMMON=(--set data.num_workers=0 --set run.device=cpu --set data.seed="$SEED")
mkdir -p "$R"
t0=$(date +%s)
if [ "$MODE" = pre ]; then
  if [ ! -f "$R/pre/finished" ]; then
    RESUME=(); [ -f "$R/pre/last.pt" ] && RESUME=(--resume)
    ikem-train pretrain --store "$STORE" --benchmark "$BENCH" --config "$CONFIGS/common/skeletonclr.yaml" \
      "${COMMON[@]}" "$@" --run "$R/pre" "${RESUME[@]}"
    touch "$R/pre/finished"
  fi
  SOURCE=(--checkpoint "$R/pre/last.pt")
else
  SOURCE=(--random-init --config "$CONFIGS/common/skeletonclr.yaml")
fi
t1=$(date +%s)
rm -rf "$R/lin" "$R/knn"
ikem-train linear --store "$STORE" --benchmark "$BENCH" "${SOURCE[@]}" --bn-recalibrate "${COMMON[@]}" --run "$R/lin"
ikem-train knn --store "$STORE" --benchmark "$BENCH" "${SOURCE[@]}" --bn-recalibrate "${COMMON[@]}" --run "$R/knn"
t2=$(date +%s)
python "$HERE/record.py" "$NAME" "$SEED" "$MODE" "$R" "$((t1 - t0))" "$((t2 - t1))" "$*" >> "$HERE/results.jsonl"
tail -n 1 "$HERE/results.jsonl"
