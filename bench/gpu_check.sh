#!/usr/bin/env bash
# One-GPU check of the training loop at the paper's settings (batch 128, queue 32768):
# samples/s of one step with the encoders one by one and stacked (issue 20), then
# samples/s of the six-modality teacher in phase 1 and phase 2 and of the student
# (distillation), through the real loop (DataLoader workers, bf16 autocast, no host sync
# in the step), the DataLoader's own samples/s beside them, and the peak GPU memory of
# each, without and with --compile; UmURL's step beside the teacher's and student's. About
# 6 minutes on one H100/H200; each part has its own time limit and it prints as it goes.
#
#   bench/gpu_check.sh                 # from the repository, with ikem installed
#   PYTHON=.venv/bin/python bench/gpu_check.sh
#
# Each loop figure is the second of two epochs of 20 steps (the first one warms up the
# workers and, with --compile, compiles); store: 2560 synthetic samples (3, 50, 25, 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}; CUDA {torch.version.cuda}")
EOF

COMMON=(bench/bench_train.py --device cuda --batch 128 --queue 32768 --samples 2560 --loop-steps 20)

echo "== DataLoader alone (batch 128, two augmented views) =="
timeout 60 "$PY" "${COMMON[@]}" --sections loading --workers 4,8

echo "== one step, encoders one by one vs stacked (model.stacked_encoders), batch 128, 2 body slots =="
timeout 150 "$PY" bench/bench_train.py --device cuda --batch 128 --persons 2 --steps 10 --sections stacked,kernels

echo "== UmURL beside the IKEM teacher and student: parameters, samples/s of a step, GFLOP/sample (batch 128, 2 body slots) =="
timeout 150 "$PY" bench/bench_train.py --device cuda --batch 128 --persons 2 --steps 10 --sections umurl

echo "== training loop, eager =="
timeout 150 "$PY" "${COMMON[@]}" --sections loop --workers 8 --compile off

echo "== training loop, torch.compile (first epoch compiles) =="
timeout 240 "$PY" "${COMMON[@]}" --sections loop --workers 8 --compile on
