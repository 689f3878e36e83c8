"""Export a store for other code: the reference pipeline's files, or a pyskl pickle.

:func:`export_benchmark` (format ``reference``, METHOD.md §1.3, §2): for each part
(``train``, ``val``) of ``splits/<benchmark>``, writes into ``DIR``:

- ``{part}_position.npy``: float32 (n, 3, T, 25, M), the preprocessed joint sequences
  (``modalities/joint``), what IKEM/CrosSCLR training reads (T = 50 by default);
- ``{part}_label.pkl``: the IKEM 3-tuple ``(sample_name, label, frame)``: names with
  ``.skeleton`` appended, 0-based int labels and header frame counts (plain lists).

Samples keep the split's order. Files are written under a temporary name and renamed
when complete, and the label pickle of a part comes last, so an interrupted export
never leaves a part that looks finished.

:func:`export_pyskl` (format ``pyskl``): the store's raw data as one pyskl annotation
pickle (:mod:`ikem_data.formats.pyskl`) that pyskl and mmaction2 train on: every sample, every
benchmark's splits under pyskl's names, written under a temporary name and renamed.
"""

import os
import pickle
from pathlib import Path

import numpy as np

from ikem_data.formats import pyskl
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
        ExportError: ``to`` is a file, the store has no complete modalities, no such
            benchmark, or an output file exists (without ``overwrite``).
        FileNotFoundError, ValueError: no store at ``store_path`` / not an ikem store.
    """
    if os.path.exists(to) and not os.path.isdir(to):
        raise ExportError(f"{to} is a file; --format reference writes a folder of four files")
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


#: Keypoint dtypes of a pyskl export: float32 keeps the store's values exactly; float16 is
#: what pyskl's own files hold (half the size; rounds by up to 2^-11 of a value).
PYSKL_DTYPES = ("float32", "float16")


def _annotations(store, names, labels, frames, dtype, block):
    """pyskl annotation dicts, one per sample in store order, reading ``raw/xyz`` block by block."""
    xyz = store["raw/xyz"]
    n = len(names)
    for start in range(0, n, block):
        data = np.asarray(xyz[start:min(start + block, n)])  # (b, 3, T_max, 25, M)
        for j in range(data.shape[0]):
            i = start + j
            sample = data[j, :, : int(frames[i])]  # (3, T, 25, M)
            used = np.flatnonzero(sample.reshape(-1, sample.shape[-1]).any(axis=0))
            persons = int(used[-1]) + 1 if used.size else 1  # pyskl's M: up to the last body present
            keypoint = np.ascontiguousarray(sample[..., :persons].transpose(3, 1, 2, 0), dtype=dtype)
            yield {"frame_dir": names[i], "label": int(labels[i]), "keypoint": keypoint,
                   "total_frames": int(frames[i])}


def export_pyskl(store_path, to, overwrite=False, dtype="float32", block=None):
    """Write the store's raw data as a pyskl annotation pickle.

    Each sample becomes ``{"frame_dir": name, "label": int (0-based), "keypoint": (M, T,
    25, 3) dtype metres, "total_frames": T}`` with T = ``raw/frames`` and M the body slots
    up to the last one holding a non-zero value (at least 1), as pyskl writes one- and
    two-person samples; ``split`` maps each benchmark part to a list of names, under
    pyskl's names for the dataset (``xsub_train``, ``xview_val``, ``xset_train``) and
    ``<benchmark, - as _>_<part>`` for the others (:func:`ikem_data.formats.pyskl.pyskl_split_name`).
    The pickle is streamed (memory: one block of samples) to ``.<name>.partial`` beside
    ``to`` and renamed when complete.

    Args:
        store_path: an ikem store with a complete gendata stage.
        to: the ``.pkl`` file to write.
        overwrite: replace an existing file; otherwise it is refused.
        dtype: ``"float32"`` (the store's values, exactly) or ``"float16"`` (pyskl's own).
        block: samples read at a time (default: the ``raw/xyz`` chunk).

    Returns:
        dict with ``samples``, ``splits`` ({pyskl name: count}) and ``path``.

    Raises:
        ExportError: the store's gendata is not complete, the store is not of NTU RGB+D
            (pyskl files hold NTU names and splits), ``to`` exists (without ``overwrite``) or
            is a folder, or an unknown dtype.
        FileNotFoundError, ValueError: no store at ``store_path`` / not an ikem store.
    """
    if dtype not in PYSKL_DTYPES:
        raise ExportError(f"pyskl keypoint dtype must be one of {', '.join(PYSKL_DTYPES)}, not {dtype!r}")
    to = Path(to)
    if to.is_dir():
        raise ExportError(f"{to} is a folder; the pyskl export is one .pkl file")
    if to.exists() and not overwrite:
        raise ExportError(f"{to} already exists; pass --overwrite to replace it")
    with open_store(store_path, "r") as store:
        if not store.is_complete("gendata"):
            raise ExportError(f"store {store.path} has no complete gendata stage; run (or finish) "
                              f"`ikem-data gendata` first")
        gen = store.stage("gendata")
        dataset = gen.get("dataset") or (gen.get("params") or {}).get("dataset")
        if dataset is None:  # a store that does not say: its benchmark names do
            dataset = "ntu120" if any(b.startswith("ntu120") for b in store.benchmarks()) else "ntu60"
        if dataset not in pyskl.PYSKL_BENCHMARKS:  # pyskl's reader (and ours) take NTU names and splits only
            raise ExportError(f"store {store.path} holds {dataset} recordings; --format pyskl writes NTU RGB+D "
                              f"annotations (NTU sample names, {', '.join(pyskl.PYSKL_BENCHMARKS)} splits), the only "
                              "kind pyskl and `ikem-data gendata --input-format pyskl` read: use --format reference")
        names = store.names()
        labels = np.asarray(store["raw/label"][:], dtype=np.int64)
        frames = np.asarray(store["raw/frames"][:], dtype=np.int64)
        splits = {}
        for benchmark in store.benchmarks():
            for part in PARTS:
                index = store.split(benchmark, part)
                splits[pyskl.pyskl_split_name(benchmark, part, dataset)] = [names[i] for i in index]
        block = int(block or store["raw/xyz"].chunks[0] or 1)
        to.parent.mkdir(parents=True, exist_ok=True)
        tmp = to.with_name(f".{to.name}.partial")
        try:
            pyskl.write_pickle(tmp, splits, _annotations(store, names, labels, frames, np.dtype(dtype), block))
            os.replace(tmp, to)
        finally:
            if tmp.exists():
                tmp.unlink()
    return {"samples": len(names), "splits": {k: len(v) for k, v in splits.items()}, "path": str(to)}
