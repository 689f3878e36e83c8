"""Creating and filling a ``gendata`` store (steps 2 to 6 of :mod:`ikem_data.gendata.run`).

:func:`check_pass` parses every input once to find ``T_max``; :func:`create_store`
builds the ``raw/`` arrays under the partial name and renames them to ``out``;
:func:`write_pass` parses the inputs again and writes them chunk by chunk, saving the
state after each write so that an interruption leaves a store a rerun continues;
:func:`finish_store` shrinks the arrays to what was written, writes ``splits/`` and marks
the store complete, last. :data:`WRITE_BUFFER_BYTES` bounds the memory: a ``raw/xyz``
chunk, the write buffer and the parsed files waiting to be written.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings

import numpy as np

from ikem_data import __version__
from ikem_data.gendata.errors import GendataError
from ikem_data.gendata.plan import fingerprint, sample_line
from ikem_data.formats.registry import get_format
from ikem_data.layouts import get_layout
from ikem_data.store import open_store, remove_path

ID_FIELDS = ("setup", "camera", "subject", "replication")
#: Upper bound of the write buffer; a chunk larger than this is written alone.
WRITE_BUFFER_BYTES = 256 << 20
RAW_ARRAYS = ("xyz", "frames", "bodies", "label", "setup", "camera", "subject", "replication", "name")
_STOP_HINT = ("the store is resumable: fix or remove the file and rerun the same command, "
              "or rerun with --on-error skip to record it and go on")


def _sample_bytes(t_max, joints, max_bodies):
    return 3 * t_max * joints * max_bodies * 4  # one sample of raw/xyz, float32


def _create_arrays(store, n, t_max, joints, max_bodies, chunk_size, name_width):
    c = chunk_size
    # A chunk is written (and read) whole: with very long sequences it holds fewer samples,
    # so that one chunk stays within the write budget (one sample at the least).
    xyz_chunk = max(1, min(c, WRITE_BUFFER_BYTES // _sample_bytes(t_max, joints, max_bodies)))
    store.create_array("raw/xyz", (n, 3, t_max, joints, max_bodies), np.float32,
                       chunks=(xyz_chunk, 3, t_max, joints, max_bodies), overwrite=True)
    big = max(c, 1024 // c * c)  # 1-D arrays: chunks that are a multiple of the sample chunk
    store.create_array("raw/frames", (n,), np.int32, chunks=(big,), overwrite=True)
    store.create_array("raw/bodies", (n,), np.int8, chunks=(big,), overwrite=True)
    store.create_array("raw/label", (n,), np.int16, chunks=(big,), fill_value=-1, overwrite=True)
    for field in ID_FIELDS:
        store.create_array(f"raw/{field}", (n,), np.int16, chunks=(big,), fill_value=-1, overwrite=True)
    store.create_array("raw/name", (n,), f"S{name_width}", chunks=(big,), overwrite=True)


def _save_state(store, state):
    store.flush()  # data first, then the state that points past it
    store.attrs["gendata"] = state
    store.flush()


def _task(sample, params, frames_only):
    """The task of :func:`ikem_data.gendata.workers.load_sample` for one sample."""
    return (sample.get("source", sample["path"]), get_format(params["input_format"]).reader, params["body_policy"],
            params["max_bodies"], frames_only)


def check_pass(samples, params, parsers, progress):
    """The check pass: parse every file in full; ``(T_max over the files that parse, failures)``.

    Raises:
        GendataError: with ``on_error="stop"``, the first malformed file (nothing written
            yet); with either, when no file parses.
    """
    from ikem_data.progress import progress_bar

    tasks = ((k, _task(s, params, True)) for k, s in enumerate(samples))
    t_max, failures = 0, []
    bar = progress_bar(total=len(samples), unit="file", disable=not progress, smoothing=0.1, desc="checking")
    try:
        for _, result in parsers.map(tasks, len(samples)):
            bar.update(1)
            if result[0] == "ok":
                t_max = max(t_max, result[1])
            elif params["on_error"] == "stop":
                raise GendataError(result[1] + " (nothing was written: fix or remove the file and rerun, "
                                               "or rerun with --on-error skip to leave it out)")
            else:
                failures.append(result[1])
    finally:
        bar.close()
    if len(failures) == len(samples):
        raise GendataError("no input file could be read; first failure: " + failures[0])
    return t_max, failures


def create_store(out, partial, job, t_max):
    """Build the new store at ``partial`` (arrays, then the state), then rename it to ``out``.

    ``raw/xyz`` is (N, 3, ``t_max``, 25, M) float32 (zeros), the 1-D ``raw/`` arrays (N,),
    N = the planned samples; whatever was at ``out`` is removed first (the caller decided
    it may be replaced).

    Returns:
        the initial ``attrs["gendata"]`` state (``complete`` false, nothing written).
    """
    params, samples = job["params"], job["samples"]
    name_width = max(1, max(len(s["name"].encode()) for s in samples))
    state = dict(complete=False, params=params, ikem_version=__version__, t_max=max(int(t_max), 1),
                 next_file=0, written=0, done_sha1=fingerprint([]), failed=list(job["failed"]),
                 skipped=len(job["skipped"]),
                 ignored=list(job["skipped"]), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store = open_store(partial, "w")
    try:
        layout = get_layout(get_format(params["input_format"]).layout)  # the format's skeleton
        _create_arrays(store, len(samples), state["t_max"], layout.num_joints, params["max_bodies"],
                       params["chunk_size"], name_width)
        store.attrs["layout"] = layout.name
        _save_state(store, state)
    finally:
        store.close()
    remove_path(out)  # whatever is there was decided replaceable by the caller
    os.replace(partial, out)
    return state


def write_pass(store, state, samples, params, parsers, progress, write_chunks, stop_after_chunks):
    """The write pass: parse from ``state["next_file"]`` on and write chunk by chunk.

    Returns:
        the state after the last write (``next_file`` = len(samples) when all were done).

    Raises:
        GendataError: with ``on_error="stop"``, a malformed file (the samples before it
            are written and recorded, so a rerun continues there).
        KeyboardInterrupt: ``stop_after_chunks`` reached, or Ctrl-C; the state saved last
            is consistent with the data.
    """
    m, t_max = params["max_bodies"], state["t_max"]
    start = state["next_file"]
    if start >= len(samples):
        return state
    arrays = {name: store[f"raw/{name}"] for name in RAW_ARRAYS}
    chunk = int(arrays["xyz"].chunks[0])  # chunk_size, or fewer for very long sequences
    joints = int(arrays["xyz"].shape[3])  # V of the store's layout
    sample_bytes = _sample_bytes(t_max, joints, m)
    # A multiple of the chunk (writes stay chunk-aligned), within the byte budget.
    block = chunk * max(1, min(int(write_chunks), WRITE_BUFFER_BYTES // (chunk * sample_bytes)))
    buf = np.zeros((block, 3, t_max, joints, m), dtype=np.float32)
    meta = {name: [] for name in RAW_ARRAYS if name != "xyz"}
    pending_failed = []
    chunks_done = 0
    done = hashlib.sha1()  # running fingerprint of samples[:next_file], as gendata_inputs.fingerprint computes it
    for sample in samples[:start]:
        done.update(sample_line(sample))
    hashed = start

    def flush_buffer(next_file):
        nonlocal chunks_done, hashed
        n = len(meta["name"])
        w = state["written"]
        if n:
            arrays["xyz"][w:w + n] = buf[:n]
            for name, values in meta.items():
                dtype = arrays[name].dtype
                arrays[name][w:w + n] = np.asarray(values, dtype=dtype)
        for sample in samples[hashed:next_file]:
            done.update(sample_line(sample))
        hashed = next_file
        state["written"] = w + n
        state["next_file"] = next_file
        state["done_sha1"] = done.hexdigest()[:16]
        recorded = {f["file"] for f in state["failed"]}  # ikem 0.1 recorded check failures up front
        state["failed"] = state["failed"] + [f for f in pending_failed if f["file"] not in recorded]
        pending_failed.clear()
        _save_state(store, state)
        buf[:n] = 0
        for values in meta.values():
            values.clear()
        chunks_done += 1
        if stop_after_chunks is not None and chunks_done >= stop_after_chunks:
            raise KeyboardInterrupt

    def fail(k, message):
        if params["on_error"] == "stop":
            flush_buffer(k)  # keep the good samples before it
            raise GendataError(f"{message} ({_STOP_HINT})")
        pending_failed.append(dict(file=samples[k]["path"], reason=message))

    from ikem_data.progress import progress_bar

    tasks = ((k, _task(samples[k], params, False)) for k in range(start, len(samples)))
    bar = progress_bar(total=len(samples), initial=start, unit="file", disable=not progress, smoothing=0.1,
               desc="gendata")
    try:
        # Parsed files waiting for their turn stay within the write budget too.
        waiting = WRITE_BUFFER_BYTES // sample_bytes
        for k, result in parsers.map(tasks, len(samples) - start, max_waiting=waiting):
            bar.update(1)
            if result[0] == "error":
                fail(k, result[1])
            elif result[2] > t_max:  # the file changed (or was added) since the store was started
                fail(k, f"{samples[k]['path']}: {result[2]} frames, more than the T_max of {t_max} that "
                        f"{store.path} was made with; rerun with --overwrite to rebuild it")
            else:
                _, xyz, n_frames, n_bodies = result
                slot = len(meta["name"])
                buf[slot, :, :n_frames] = xyz
                sample = samples[k]
                meta["frames"].append(n_frames)
                meta["bodies"].append(min(n_bodies, 127))
                meta["label"].append(sample["label"])
                for field, value in zip(ID_FIELDS, sample["ids"]):
                    meta[field].append(value)
                meta["name"].append(sample["name"].encode("ascii"))
            if len(meta["name"]) == block:
                flush_buffer(k + 1)
        flush_buffer(len(samples))
    finally:
        bar.close()
    return state


def _membership_splits(names, samples):
    """``{benchmark: {part: int64 indices}}`` from each sample's ``split`` (``"b/part,b2/part"``)."""
    by_name = {s["name"]: s["split"] for s in samples}
    entries = {e for s in samples for e in s["split"].split(",") if e}
    splits = {b: {"train": [], "val": []} for b in sorted({e.split("/")[0] for e in entries})}
    for index, name in enumerate(names):
        for entry in filter(None, by_name[name].split(",")):
            benchmark, part = entry.split("/")
            splits[benchmark][part].append(index)
    return {b: {p: np.asarray(v, dtype=np.int64) for p, v in parts.items()} for b, parts in splits.items()}


def finish_store(store, state, samples, params, skipped, notes=()):
    """Shrink to the samples written (and T_max to the longest), write the splits, then mark complete.

    Returns:
        the final state (``complete`` true, ``n_samples``, ``benchmarks``, ``frames_stats``).

    Raises:
        GendataError: no sample was written (every input failed); the state is reset so
            that the next run starts over.
    """
    n = state["written"]
    if n == 0:
        first = state["failed"][0]["reason"] if state["failed"] else "none recorded"
        # Start over on the next run rather than stay stuck on an empty store.
        state.update(next_file=0, failed=[], done_sha1=fingerprint([]))
        _save_state(store, state)
        raise GendataError(f"every input file failed (first: {first}); fix the files and rerun")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr re-saves raw/name's metadata: "no Zarr V3 specification"
        for name in RAW_ARRAYS:
            if store[f"raw/{name}"].shape[0] != n:
                store.resize(f"raw/{name}", n)
    frames = np.asarray(store["raw/frames"][:n])
    t_stored = max(1, int(frames.max()))
    xyz = store["raw/xyz"]
    if t_stored < xyz.shape[2]:  # the longest file failed in the write pass: T_max from what is stored
        xyz.resize((xyz.shape[0], xyz.shape[1], t_stored) + tuple(xyz.shape[3:]))
    state["t_max"] = t_stored
    names = store.names()
    notes = list(notes)
    store_splits = getattr(get_format(params["input_format"]).module(), "store_splits", None)
    if store_splits is None:  # each sample's benchmark/part memberships
        splits = _membership_splits(names, samples)
    else:
        splits, own_notes = store_splits(names, samples, params)
        notes += own_notes
    if "splits" in store:  # an earlier, interrupted attempt
        del store.root["splits"]
    for benchmark, parts in splits.items():
        for part, index in parts.items():
            store.create_array(f"splits/{benchmark}/{part}", index.shape, np.int64,
                               chunks=(max(1, min(len(index), 65536)),), overwrite=True)[:] = index
    state.update(
        n_samples=int(n), dataset=params["dataset"],
        benchmarks={b: {p: int(len(v)) for p, v in parts.items()} for b, parts in splits.items()},
        frames_stats=dict(min=int(frames.min()), max=int(frames.max()), mean=float(frames.mean()),
                          median=float(np.median(frames)), over_300=int((frames > 300).sum())),
        notes=notes, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _save_state(store, state)  # everything flushed ...
    state["complete"] = True
    store.attrs["gendata"] = state  # ... then completion, last
    store.flush()
    return state
