#!/bin/bash
# One row of the study "Does pretraining learn?" (README): SkeletonCLR on the joint stream,
# or the random-init baseline, then linear and KNN evaluation (BN statistics recomputed on
# the train split for both). Appends one JSON line to results.jsonl beside this script.
#
#   run_one.sh NAME STORE BENCHMARK SEED pre|random|umurl|umurl-random [--set key=value ...]
#
# umurl / umurl-random: UmURL (configs/<BENCHMARK>/umurl.yaml, on a store built with
# --t-length 64) and its random-init baseline, evaluated on the fused multi-modal feature.
#
# A pretraining run interrupted (Ctrl-C, a kill) continues with --resume when rerun.
# DEVICE=cuda runs every job on the GPU (default cpu).
set -euo pipefail
NAME=$1; STORE=$2; BENCH=$3; SEED=$4; MODE=$5; shift 5
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIGS=$HERE/../../configs
R=${RUNS:-$HERE/runs}/$NAME-s$SEED
COMMON=(--set data.num_workers=0 --set run.device="${DEVICE:-cpu}" --set data.seed="$SEED")
mkdir -p "$R"
t0=$(date +%s)
CONFIG=$CONFIGS/common/skeletonclr.yaml
case "$MODE" in umurl|umurl-random) CONFIG=$CONFIGS/$BENCH/umurl.yaml ;; esac
if [ "$MODE" = pre ] || [ "$MODE" = umurl ]; then
  if [ ! -f "$R/pre/finished" ]; then
    RESUME=(); [ -f "$R/pre/last.pt" ] && RESUME=(--resume)
    ikem-train pretrain --store "$STORE" --benchmark "$BENCH" --config "$CONFIG" \
      "${COMMON[@]}" "$@" --run "$R/pre" "${RESUME[@]}"
    touch "$R/pre/finished"
  fi
  SOURCE=(--checkpoint "$R/pre/last.pt")
else
  SOURCE=(--random-init --config "$CONFIG" "$@")  # the random encoders get the options a pretrained row's got
fi
t1=$(date +%s)
rm -rf "$R/lin" "$R/knn"
ikem-train linear --store "$STORE" --benchmark "$BENCH" "${SOURCE[@]}" --bn-recalibrate "${COMMON[@]}" --run "$R/lin"
ikem-train knn --store "$STORE" --benchmark "$BENCH" "${SOURCE[@]}" --bn-recalibrate "${COMMON[@]}" --run "$R/knn"
t2=$(date +%s)
python "$HERE/record.py" "$NAME" "$SEED" "$MODE" "$R" "$((t1 - t0))" "$((t2 - t1))" "$*" >> "$HERE/results.jsonl"
tail -n 1 "$HERE/results.jsonl"
