#!/usr/bin/env bash
# One command on a fresh clone: install ikem into .venv and run the whole IKEM method
# (gendata -> modalities -> teacher -> distillation -> linear and KNN evaluation, beside
# random-init and supervised baselines, 3 seeds) on the bundled MIT-licensed Kinect captures.
# A smoke run of 15-25 minutes on 2 quiet CPU cores (as README says), not a benchmark.
# Extra arguments go to `ikem-train demo` (see `ikem-train demo --help`).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# PyTorch first: pip takes the build that fits this machine (here the CPU one).
python -m pip show -q torch >/dev/null 2>&1 || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e .
ikem-train demo "$@"
