"""The study's table from results.jsonl: per row, mean ± std over seeds (population std, as the demo),
and how far each pretrained row lies above its random-init row in units of the larger std:
``<dataset>-<store>-random`` (ST-GCN), or for UmURL ``<dataset>-<store>-umurl<tail>-random`` (its
own random encoder, the same widths ``<tail>`` names).

    python studies/pretraining_learns/summarize.py [results.jsonl]
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.jsonl")
rows = defaultdict(list)
for line in path.read_text().splitlines():
    if line.strip():
        record = json.loads(line)
        rows[record["name"]].append(record)
print(f"{'row':<30}{'seeds':>6}{'linear':>16}{'KNN (k=1)':>16}{'pretrain s':>12}  loss first -> last epoch")
for name, records in rows.items():
    lin = 100 * np.array([r["linear_final_top1"] for r in records])
    knn = 100 * np.array([r["knn_top1"] for r in records])
    secs = np.mean([r["pretrain_seconds"] for r in records])
    losses = [r["loss_per_epoch"] for r in records if r["loss_per_epoch"]]
    trend = "; ".join(f"{l[0]} -> {l[-1]} (min {min(l)})" for l in losses) or "-"
    print(f"{name:<30}{len(records):>6}{lin.mean():>9.1f} ± {lin.std():4.1f}{knn.mean():>9.1f} ± {knn.std():4.1f}"
          f"{secs:>12.0f}  {trend}")

print("margin over random init, in units of the larger std (linear / KNN):")
for name, records in rows.items():
    parts = name.split("-")
    kept = parts[:2] + (parts[parts.index("umurl"):] if "umurl" in parts else [])
    base = "-".join(kept) + "-random"
    if name == base or base not in rows:
        continue
    cells = []
    for key in ("linear_final_top1", "knn_top1"):
        ours = np.array([r[key] for r in records])
        theirs = np.array([r[key] for r in rows[base]])
        spread = max(ours.std(), theirs.std())
        cells.append(f"{(ours.mean() - theirs.mean()) / spread:+.1f}" if spread > 0 else "n/a")
    print(f"  {name:<30} {cells[0]} / {cells[1]}  ({len(records)} vs {len(rows[base])} seeds)")
