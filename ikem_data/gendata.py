"""Raw skeleton files into the ``raw/`` part of an ikem store: parallel, streaming, resumable.

Flow (DESIGN.md §3):

1. list the inputs (NTU ``.skeleton`` files sorted by name, minus the ignore list; or the
   files of a Kinect labels CSV) and read every frame count cheaply (headers only) to get
   ``T_max``, the longest sequence: ``raw/xyz`` is never truncated;
2. create the store with ``N`` = number of inputs and record the state in
   ``attrs["gendata"]`` (``complete`` false);
3. worker processes parse files and return arrays; the parent alone writes them, in
   sample order, one chunk of ``chunk_size`` samples at a time; after each chunk the data
   is flushed and then ``next_file``/``written`` are saved, so an interruption (Ctrl-C,
   crash, a malformed file) leaves a store that a rerun of the same command continues;
4. files that fail with ``on_error="skip"`` are recorded with their reason and left out
   (samples are written densely; arrays are shrunk to the number written at the end);
5. the split index arrays are written, and ``complete`` is set last.

A rerun with the same parameters continues an incomplete store and leaves a complete one
alone; a store made with other parameters is refused unless ``overwrite``.
Memory stays bounded: one chunk buffer plus a few in-flight files per worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ikem_data import __version__
from ikem_data import ntu
from ikem_data.store import is_hdf5_path, open_store

INPUT_FORMATS = ("ntu", "kinect-csv")
ON_ERROR = ("stop", "skip")
ID_FIELDS = ("setup", "camera", "subject", "replication")
NUM_JOINTS = 25


class GendataError(Exception):
    """A user-facing error of ``gendata`` (bad arguments or input); the message is one line."""


# -- worker side -----------------------------------------------------------------------

def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def load_sample(task):
    """Parse one input file (runs in a worker).

    Args:
        task: ``(path, input_format, body_policy, max_bodies)``.

    Returns:
        ``("ok", xyz (3, T, 25, M) float32, n_frames, n_bodies)`` or ``("error", message)``.
    """
    path, input_format, body_policy, max_bodies = task
    try:
        if input_format == "ntu":
            from ikem_data.skeleton import load_xyz

            xyz, n_frames, n_bodies = load_xyz(path, body_policy, max_bodies)
        else:
            from ikem_data.kinect import read_kinect_csv

            joints, _ = read_kinect_csv(path)
            xyz = np.zeros(joints.shape + (max_bodies,), dtype=np.float32)
            xyz[..., 0] = joints
            n_frames, n_bodies = joints.shape[1], 1
        return ("ok", xyz, int(n_frames), int(n_bodies))
    except (ValueError, OSError) as exc:  # format errors are ValueErrors naming file and line
        message = str(exc)
        if str(path) not in message:
            message = f"{path}: {message}"
        return ("error", message)


# -- planning --------------------------------------------------------------------------

def _fingerprint(names):
    digest = hashlib.sha1()
    for name in names:
        digest.update(name.encode() + b"\n")
    return digest.hexdigest()[:16]


def plan(raw=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed", max_bodies=2,
         ignore_list=None, on_error="stop", chunk_size=16):
    """Resolve the inputs and the parameters that identify a store.

    Returns:
        dict with ``params`` (JSON-able; equal params mean "the same command"),
        ``samples`` (list of dicts: name, path, label, ids, split) and ``skipped``
        (names left out by the ignore list).

    Raises:
        GendataError: a bad argument or input (missing/empty folder, bad file name, ...).
    """
    if input_format not in INPUT_FORMATS:
        raise GendataError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, not {input_format!r}")
    if on_error not in ON_ERROR:
        raise GendataError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    if body_policy not in ("listed", "tracked"):
        raise GendataError(f"--bodies must be listed or tracked, not {body_policy!r}")
    if int(chunk_size) < 1 or int(max_bodies) < 1:
        raise GendataError("chunk size and max bodies must be positive")
    samples, skipped = [], []
    try:
        if input_format == "ntu":
            if raw is None:
                raise GendataError("--raw is required for NTU input")
            files = ntu.list_skeleton_files(raw)
            ids = [ntu.parse_name(p.name) for p in files]
            if dataset is None:
                dataset = ntu.infer_dataset(ids)
            ntu.check_dataset(ids, dataset)
            if ignore_list is None:
                ignore_source = f"official:{ntu.MISSING_LIST_FILES[dataset]}"
                ignored = set(ntu.missing_samples(dataset))
            else:
                ignore_source = str(Path(ignore_list).resolve())
                ignored = set(ntu.read_ignore_list(ignore_list))
            for path, sid in zip(files, ids):
                if sid.name in ignored:
                    skipped.append(sid.name)
                    continue
                samples.append(dict(name=sid.name, path=str(path), label=sid.label, split=None,
                                    ids=(sid.setup, sid.camera, sid.subject, sid.replication)))
            raw_source = str(Path(raw).resolve())
        else:
            from ikem_data.kinect import read_labels_csv

            if labels is None:
                raise GendataError("--labels FILE (a file,label[,split] CSV) is required for --input-format kinect-csv")
            if dataset not in (None, "kinect"):
                raise GendataError("--dataset applies to NTU input only")
            if raw is not None and not Path(raw).is_dir():
                raise GendataError(f"raw folder {raw} does not exist")
            dataset = "kinect"
            ignore_source = None
            for row in read_labels_csv(labels, raw):
                samples.append(dict(name=row.file, path=str(row.path), label=row.label, split=row.split,
                                    ids=(-1, -1, -1, -1)))
            raw_source = str(Path(raw).resolve()) if raw is not None else None
    except GendataError:
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise GendataError(str(exc)) from None
    if not samples:
        raise GendataError(f"no samples left in {raw} after the ignore list ({len(skipped)} ignored)")
    params = dict(
        input_format=input_format, dataset=dataset, raw=raw_source,
        labels=str(Path(labels).resolve()) if labels is not None else None,
        body_policy=body_policy, max_bodies=int(max_bodies), ignore_list=ignore_source,
        on_error=on_error, chunk_size=int(chunk_size),
        n_inputs=len(samples), inputs_sha1=_fingerprint(s["name"] for s in samples),
    )
    return dict(params=params, samples=samples, skipped=skipped)


def _frame_count(path, input_format):
    if input_format == "ntu":
        from ikem_data.skeleton import read_frame_count

        return read_frame_count(path)
    from ikem_data.kinect import count_frames

    return count_frames(path)


def _params_diff(old, new):
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


# -- the writer --------------------------------------------------------------------------

RAW_ARRAYS = ("xyz", "frames", "bodies", "label", "setup", "camera", "subject", "replication", "name")


def _create_arrays(store, n, t_max, max_bodies, chunk_size, name_width):
    c = chunk_size
    store.create_array("raw/xyz", (n, 3, t_max, NUM_JOINTS, max_bodies), np.float32,
                       chunks=(c, 3, t_max, NUM_JOINTS, max_bodies), overwrite=True)
    big = max(c, 1024 // c * c)  # 1-D arrays: chunks that are a multiple of the sample chunk
    store.create_array("raw/frames", (n,), np.int32, chunks=(big,), overwrite=True)
    store.create_array("raw/bodies", (n,), np.int8, chunks=(big,), overwrite=True)
    store.create_array("raw/label", (n,), np.int16, chunks=(big,), fill_value=-1, overwrite=True)
    for field in ID_FIELDS:
        store.create_array(f"raw/{field}", (n,), np.int16, chunks=(big,), fill_value=-1, overwrite=True)
    store.create_array("raw/name", (n,), f"S{name_width}", chunks=(big,), overwrite=True)


def _flush(store):
    if store.kind == "hdf5":
        store.root.flush()


def _save_state(store, state):
    _flush(store)  # data first, then the state that points past it
    store.attrs["gendata"] = state


def gendata(raw=None, out=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed",
            max_bodies=2, ignore_list=None, on_error="stop", chunk_size=16, workers=None, overwrite=False,
            progress=True, write_chunks=4, stop_after_chunks=None, log=print):
    """Build (or continue) the ``raw/`` part of a store from raw files.

    Args:
        raw: folder of ``.skeleton`` files (NTU) or of Kinect CSVs (optional with ``labels``).
        out: store path (zarr directory; HDF5 when it ends in ``.h5``/``.hdf5``).
        input_format: ``"ntu"`` or ``"kinect-csv"``.
        dataset: ``"ntu60"`` or ``"ntu120"``; inferred from the ids when ``None``.
        labels: ``file,label[,split]`` CSV for Kinect input (label 0-based).
        body_policy: ``"listed"`` (reference) or ``"tracked"`` (see ``ikem_data.skeleton``).
        max_bodies: slots M.
        ignore_list: text file of sample names to leave out; default: the official
            missing-skeleton list of the dataset (packaged).
        on_error: ``"stop"`` (raise, store stays resumable) or ``"skip"`` (record and go on).
        chunk_size: samples per chunk of ``raw/xyz`` and per write.
        workers: parser processes (default ``os.cpu_count()``; 1 parses in this process).
        overwrite: replace a store made with other parameters.
        progress: show a tqdm bar (files/s).
        write_chunks: chunks of samples gathered per write (zarr compresses the chunks of
            one write in parallel); the state is saved after each write. Not a parameter of
            the store: a rerun may use another value.
        stop_after_chunks: testing aid: raise ``KeyboardInterrupt`` after this many
            writes in this call, as a Ctrl-C would.
        log: callable for one-line messages.

    Returns:
        the final ``attrs["gendata"]`` dict (``complete`` true).

    Raises:
        GendataError: bad arguments or input, a store made with other arguments, or (with
            ``on_error="stop"``) a malformed file: the message names file and line.
        KeyboardInterrupt: interrupted; the store is resumable.
    """
    if out is None:
        raise GendataError("--out is required")
    out = Path(out)
    job = plan(raw, input_format=input_format, dataset=dataset, labels=labels, body_policy=body_policy,
               max_bodies=max_bodies, ignore_list=ignore_list, on_error=on_error, chunk_size=chunk_size)
    params, samples = job["params"], job["samples"]
    chunk_size, max_bodies = params["chunk_size"], params["max_bodies"]

    store, state = None, None
    if out.exists():
        try:
            store = open_store(out, "r+")
        except (ValueError, FileNotFoundError) as exc:
            if not (out.is_dir() and not any(out.iterdir())):
                raise GendataError(f"{out} exists and is not an ikem store ({exc}); nothing was changed") from None
        if store is not None:
            old = store.stage("gendata")
            if old is not None and old.get("params") == params:
                if old.get("complete"):
                    store.close()
                    log(f"{out} is already complete ({old.get('n_samples')} samples); nothing to do")
                    return old
                state = old
                log(f"resuming {out}: {old['written']} samples written, "
                    f"{old['next_file']} of {len(samples)} files done")
            else:
                store.close()
                store = None
                if not overwrite:
                    why = _params_diff(old.get("params", {}), params) if old else "it has no gendata stage"
                    raise GendataError(f"{out} was made with other arguments ({why}); use --overwrite to replace it")
    if state is None:
        state = _start(out, job, input_format, log)
        store = open_store(out, "r+")
    try:
        state = _run(store, state, samples, params, workers, progress, write_chunks, stop_after_chunks)
        if state["next_file"] >= len(samples) and not state["complete"]:
            state = _finish(store, state, samples, params, job["skipped"])
            log(f"wrote {state['n_samples']} samples to {out}"
                + (f"; {len(state['failed'])} files failed (see ikem-data info)" if state["failed"] else "")
                + (f"; {state['skipped']} ignored" if state["skipped"] else ""))
        return state
    finally:
        store.close()


def _start(out, job, input_format, log):
    """Header pass (frame counts), then create the store and its arrays."""
    params, samples = job["params"], job["samples"]
    failed = []
    t_max = 0
    keep = []
    for sample in samples:
        try:
            frames = _frame_count(sample["path"], input_format)
        except (ValueError, OSError) as exc:
            message = str(exc) if sample["path"] in str(exc) else f"{sample['path']}: {exc}"
            if params["on_error"] == "stop":
                raise GendataError(message) from None
            failed.append(dict(file=sample["path"], reason=message))
            continue
        keep.append(True)
        t_max = max(t_max, frames)
    if not keep:
        raise GendataError("no input file could be read; first failure: " + failed[0]["reason"])
    name_width = max(1, max(len(s["name"].encode()) for s in samples))
    store = open_store(out, "w")
    try:
        state = dict(complete=False, params=params, ikem_version=__version__, t_max=max(int(t_max), 1),
                     next_file=0, written=0, failed=failed, pre_failed=[f["file"] for f in failed],
                     skipped=len(job["skipped"]), ignored=list(job["skipped"]), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        store.attrs["gendata"] = state  # first: a store interrupted from here on is recognised
        _create_arrays(store, len(samples), state["t_max"], params["max_bodies"], params["chunk_size"], name_width)
        _save_state(store, state)
    finally:
        store.close()
    log(f"{len(samples)} files, longest sequence {t_max} frames"
        + (f", {len(job['skipped'])} ignored by the list" if job["skipped"] else ""))
    return state


def _run(store, state, samples, params, workers, progress, write_chunks, stop_after_chunks):
    """Parse from ``state["next_file"]`` on and write chunk by chunk."""
    if "raw/name" not in store:  # interrupted while creating the arrays
        width = max(1, max(len(s["name"].encode()) for s in samples))
        _create_arrays(store, len(samples), state["t_max"], params["max_bodies"], params["chunk_size"], width)
    chunk, m, t_max = params["chunk_size"], params["max_bodies"], state["t_max"]
    pre_failed = set(state.get("pre_failed", []))
    start = state["next_file"]
    todo = [k for k in range(start, len(samples)) if samples[k]["path"] not in pre_failed]
    if not todo:
        state["next_file"] = len(samples)
        return state
    arrays = {name: store[f"raw/{name}"] for name in RAW_ARRAYS}
    block = chunk * max(1, int(write_chunks))  # a multiple of the chunk: writes stay chunk-aligned
    buf = np.zeros((block, 3, t_max, NUM_JOINTS, m), dtype=np.float32)
    meta = {name: [] for name in RAW_ARRAYS if name != "xyz"}
    pending_failed = []
    chunks_done = 0
    workers = max(1, int(workers or os.cpu_count() or 1))

    def flush_buffer(next_file):
        nonlocal chunks_done
        n = len(meta["name"])
        w = state["written"]
        if n:
            arrays["xyz"][w:w + n] = buf[:n]
            for name, values in meta.items():
                dtype = arrays[name].dtype
                arrays[name][w:w + n] = np.asarray(values, dtype=dtype)
        state["written"] = w + n
        state["next_file"] = next_file
        state["failed"] = state["failed"] + pending_failed
        pending_failed.clear()
        _save_state(store, state)
        buf[:n] = 0
        for values in meta.values():
            values.clear()
        chunks_done += 1
        if stop_after_chunks is not None and chunks_done >= stop_after_chunks:
            raise KeyboardInterrupt

    def tasks():
        for k in todo:
            yield k, (samples[k]["path"], params["input_format"], params["body_policy"], m)

    from tqdm import tqdm

    bar = tqdm(total=len(samples), initial=start, unit="file", disable=not progress, smoothing=0.1,
               desc="gendata")
    pool = None
    try:
        if workers > 1 and len(todo) > 1:
            if params["input_format"] == "ntu":  # compile (or load) the parser once, here,
                from ikem_data.skeleton import parse_skeleton  # so workers load it from the cache

                parse_skeleton(b"0\n")
            # spawn, not fork: the parent runs zarr's I/O thread, and forking a threaded
            # process can deadlock the child.
            pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_worker_init,
                                       mp_context=multiprocessing.get_context("spawn"))
            results = _ordered(pool, tasks(), depth=4 * workers)
        else:
            results = ((k, load_sample(task)) for k, task in tasks())
        for k, result in results:
            bar.update(1)
            if result[0] == "error":
                if params["on_error"] == "stop":
                    flush_buffer(k)  # keep the good samples before it
                    raise GendataError(result[1] + " (the store is resumable: fix or remove the file, "
                                                   "or rerun with --on-error skip)")
                pending_failed.append(dict(file=samples[k]["path"], reason=result[1]))
            else:
                _, xyz, n_frames, n_bodies = result
                if n_frames > t_max:  # the file changed since the store was started
                    result = ("error", f"{samples[k]['path']}: {n_frames} frames, more than the {t_max} "
                                       f"recorded when {store.path} was started; rerun with --overwrite")
                    if params["on_error"] == "stop":
                        flush_buffer(k)
                        raise GendataError(result[1])
                    pending_failed.append(dict(file=samples[k]["path"], reason=result[1]))
                    continue
                slot = len(meta["name"])
                buf[slot, :, :n_frames] = xyz
                sample = samples[k]
                meta["frames"].append(n_frames)
                meta["bodies"].append(min(n_bodies, 127))
                meta["label"].append(sample["label"])
                for field, value in zip(ID_FIELDS, sample["ids"]):
                    meta[field].append(value)
                meta["name"].append(sample["name"].encode())
            if len(meta["name"]) == block:
                flush_buffer(k + 1)
        flush_buffer(len(samples))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return state


def _ordered(pool, tasks, depth):
    """Submit tasks with at most ``depth`` in flight; yield ``(key, result)`` in task order."""
    inflight = deque()
    for key, task in tasks:
        inflight.append((key, pool.submit(load_sample, task)))
        if len(inflight) >= depth:
            k, future = inflight.popleft()
            yield k, future.result()
    while inflight:
        k, future = inflight.popleft()
        yield k, future.result()


def _finish(store, state, samples, params, skipped):
    """Shrink to the samples written, write the splits, then mark complete."""
    n = state["written"]
    if n == 0:
        raise GendataError("every input file failed; first failure: " + state["failed"][0]["reason"])
    for name in RAW_ARRAYS:
        if store[f"raw/{name}"].shape[0] != n:
            store.resize(f"raw/{name}", n)
    names = store.names()
    if params["input_format"] == "ntu":
        splits = ntu.benchmark_splits([ntu.parse_name(name) for name in names], params["dataset"])
    else:
        by_name = {s["name"]: s["split"] for s in samples}
        splits = {}
        if any(by_name[name] is not None for name in names):
            parts = {"train": [], "val": []}
            for index, name in enumerate(names):
                if by_name[name] is not None:
                    parts[by_name[name]].append(index)
            splits["custom"] = {part: np.asarray(v, dtype=np.int64) for part, v in parts.items()}
    for benchmark, parts in splits.items():
        for part, index in parts.items():
            store.create_array(f"splits/{benchmark}/{part}", index.shape, np.int64,
                               chunks=(max(1, min(len(index), 65536)),), overwrite=True)[:] = index
    frames = np.asarray(store["raw/frames"][:])
    state.update(
        n_samples=int(n), dataset=params["dataset"],
        benchmarks={b: {p: int(len(v)) for p, v in parts.items()} for b, parts in splits.items()},
        frames_stats=dict(min=int(frames.min()), max=int(frames.max()), mean=float(frames.mean()),
                          median=float(np.median(frames)), over_300=int((frames > 300).sum())),
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _save_state(store, state)  # everything flushed ...
    state["complete"] = True
    store.attrs["gendata"] = state  # ... then completion, last
    _flush(store)
    return state
