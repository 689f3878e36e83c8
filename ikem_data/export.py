"""Export a store's benchmark in the reference pipeline's file format (METHOD.md §1.3, §2).

For each part (``train``, ``val``) of ``splits/<benchmark>``, writes into ``DIR``:

- ``{part}_position.npy``: float32 (n, 3, T, 25, M), the preprocessed joint sequences
  (``modalities/joint``), what IKEM/CrosSCLR training reads (T = 50 by default);
- ``{part}_label.pkl``: the IKEM 3-tuple ``(sample_name, label, frame)``: names with
  ``.skeleton`` appended, 0-based int labels and header frame counts (plain lists).

Samples keep the split's order. Files are written under a temporary name and renamed
when complete, and the label pickle of a part comes last, so an interrupted export
never leaves a part that looks finished.
"""

import os
import pickle
from pathlib import Path

import numpy as np

from ikem_data.store import open_store

PARTS = ("train", "val")


class ExportError(ValueError):
    """The export cannot run; the message names the store or file and the reason."""


def _positions(store, joint, index, path, block):
    """Write ``joint[index]`` to ``path`` (.npy) reading the store block by block."""
    n = len(index)
    tmp = path.with_name(f".{path.name}.partial")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n,) + tuple(joint.shape[1:]))
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    i = 0
    while i < n:
        start = int(sorted_index[i]) // block * block
        stop = min(start + block, joint.shape[0])
        j = int(np.searchsorted(sorted_index, stop, side="left"))
        data = np.asarray(joint[start:stop], dtype=np.float32)
        out[order[i:j]] = data[sorted_index[i:j] - start]
        i = j
    out.flush()
    del out
    os.replace(tmp, path)


def export_benchmark(store_path, benchmark, to, overwrite=False, block=64):
    """Write ``{train,val}_position.npy`` and ``{train,val}_label.pkl`` for a benchmark.

    Args:
        store_path: an ikem store with a complete ``modalities`` stage.
        benchmark: a benchmark under ``splits/`` (e.g. ``"ntu60-xsub"``).
        to: output folder (created).
        overwrite: replace existing files; otherwise they are refused.
        block: samples read from the store at a time (memory bound).

    Returns:
        dict part -> ``{"samples": n, "position": path, "label": path}``.

    Raises:
        ExportError: the store has no complete modalities, no such benchmark, or an
            output file exists (without ``overwrite``).
        FileNotFoundError, ValueError: no store at ``store_path`` / not an ikem store.
    """
    to = Path(to)
    with open_store(store_path, "r") as store:
        if not store.is_complete("modalities") or "modalities/joint" not in store:
            raise ExportError(f"store {store.path} has no complete modalities; run `ikem-data modalities` first")
        if benchmark not in store.benchmarks():
            have = ", ".join(store.benchmarks()) or "none"
            raise ExportError(f"benchmark {benchmark!r} not in store {store.path}; it has: {have}")
        targets = {part: (to / f"{part}_position.npy", to / f"{part}_label.pkl") for part in PARTS}
        if not overwrite:
            existing = [str(p) for pair in targets.values() for p in pair if p.exists()]
            if existing:
                raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it")
        to.mkdir(parents=True, exist_ok=True)
        names = store.names()
        labels = np.asarray(store["raw/label"][:], dtype=np.int64)
        frames = np.asarray(store["raw/frames"][:], dtype=np.int64)
        joint = store["modalities/joint"]
        result = {}
        for part in PARTS:
            index = store.split(benchmark, part)
            position, label = targets[part]
            _positions(store, joint, index, position, block)
            record = ([names[i] + ".skeleton" for i in index], [int(labels[i]) for i in index],
                      [int(frames[i]) for i in index])
            tmp = label.with_name(f".{label.name}.partial")
            with open(tmp, "wb") as f:
                pickle.dump(record, f, protocol=4)
            os.replace(tmp, label)
            result[part] = {"samples": len(index), "position": str(position), "label": str(label)}
    return result
