#!/usr/bin/env bash
# On one GPU, for NW-UCLA (xview) and UTD-MHAD (xsub) at once:
# - the demo's protocol (`ikem-train demo --store`: IKEM teacher, student, SkeletonCLR, each
#   beside its random-init baseline, and a supervised model; linear and KNN with BN
#   statistics recomputed), the rows the 2-core study could not afford;
# - UmURL and its random-init baseline (run_one.sh umurl / umurl-random, a 64-frame store).
#
#   studies/pretraining_learns/gpu_demo_protocol.sh RAW_TAR OUT [--set key=value ...]
#
# RAW_TAR: a tar of the folders nwucla_all_sqe/ and utd_mhad_skeleton/; OUT: where each
# dataset's printed table (<dataset>.txt), summary (<dataset>.json), log and the UmURL rows
# (umurl-results.jsonl) go. Settings: the packaged small-data config
# (ikem_train/small_data.yaml) plus the --set options given (demo rows only), SEEDS seeds
# (default 3), every figure at the final epoch. Each part has its own time limit (LIMIT, s);
# UMURL_SET: extra options for the UmURL rows' pretraining (e.g. "--set optim.epochs=1").
set -uo pipefail
RAW_TAR=$1; OUT=$2; shift 2
LIMIT=${LIMIT:-420}; DEVICE=${DEVICE:-cuda}; SEEDS=${SEEDS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
mkdir -p "$OUT"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$RAW_TAR" "$WORK"
workers=$(( $(nproc) / 2 ))
before=$(wc -l < "$HERE/results.jsonl")  # run_one.sh appends its rows there

umurl_rows() {  # name benchmark: UmURL rows, one seed after another
  local name=$1 bench=$2 seed
  for seed in $(seq 0 $((SEEDS - 1))); do
    for mode in umurl umurl-random; do  # names as summarize.py pairs them
      row=$name-M1-D10-umurl; [ "$mode" = umurl-random ] && row=$name-M1-umurl-random
      DEVICE=$DEVICE RUNS=$WORK/runs timeout "$LIMIT" "$HERE/run_one.sh" "$row" "$WORK/${name}64.zarr" \
        "$bench" "$seed" "$mode" ${UMURL_SET:-} >> "$OUT/$name-umurl.log" 2>&1 || echo "$name $mode seed $seed: rc $?" >> "$OUT/$name.log"
    done
  done
}

one_dataset() {  # name input-format raw-folder benchmark [--set ...]
  local name=$1 format=$2 raw=$3 bench=$4 t0=$SECONDS; shift 4
  ikem-data gendata --input-format "$format" --raw "$WORK/$raw" --out "$WORK/$name.zarr" --workers "$workers" \
    --no-progress > "$OUT/$name.log" 2>&1 &&
  ikem-data modalities --out "$WORK/$name.zarr" --workers "$workers" --quiet >> "$OUT/$name.log" 2>&1 &&
  ikem-data modalities --from "$WORK/$name.zarr" --out "$WORK/${name}64.zarr" --t-length 64 --workers "$workers" \
    --quiet >> "$OUT/$name.log" 2>&1 || { echo "$name: store failed" >> "$OUT/$name.log"; return; }
  echo "$name: stores built in $((SECONDS - t0)) s" >> "$OUT/$name.log"
  umurl_rows "$name" "$bench" &
  timeout "$LIMIT" ikem-train demo --store "$WORK/$name.zarr" --benchmark "$bench" --device "$DEVICE" \
    --seeds "$SEEDS" --out "$WORK/demo-$name" --set data.num_workers=4 "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: demo rc $? after $((SECONDS - t0)) s" >> "$OUT/$name.log"
  cp "$WORK/demo-$name/summary.json" "$OUT/$name.json" 2>/dev/null
  wait
  echo "$name: all done after $((SECONDS - t0)) s" >> "$OUT/$name.log"
}

one_dataset nwucla nwucla nwucla_all_sqe nwucla-xview "$@" &
one_dataset utd utd-mhad utd_mhad_skeleton utd-xsub "$@" &
wait
tail -n +$((before + 1)) "$HERE/results.jsonl" > "$OUT/umurl-results.jsonl"
cat "$OUT"/nwucla.log "$OUT"/utd.log
for name in nwucla utd; do echo "== $name"; sed -n '/^ikem demo finished/,$p' "$OUT/$name.txt"; done
cat "$OUT/umurl-results.jsonl"
