"""One JSON line for results.jsonl from a finished row's run folders (used by run_one.sh)."""

import json
import sys
from pathlib import Path

name, seed, mode, run, pretrain_s, eval_s, settings = sys.argv[1:]
run = Path(run)
linear = json.loads((run / "lin" / "results.json").read_text())
knn = json.loads((run / "knn" / "results.json").read_text())
losses = []
metrics = run / "pre" / "metrics.jsonl"
if metrics.is_file():
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "epoch" in record and "loss" in record:
            losses.append(round(record["loss"], 3))
print(json.dumps(dict(name=name, seed=int(seed), mode=mode, settings=settings,
                      linear_final_top1=linear["final"]["top1"], knn_top1=knn["top1"][knn["modalities"][0]] if len(knn["modalities"]) == 1 else knn["top1"]["fused"],
                      pretrain_seconds=int(pretrain_s), eval_seconds=int(eval_s), loss_per_epoch=losses)))
