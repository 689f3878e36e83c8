"""Raw skeleton files into the ``raw/`` part of an ikem store: parallel, streaming, resumable.

Flow (DESIGN.md §3):

1. list the inputs (:func:`plan`): NTU ``.skeleton`` files sorted by name, minus the
   ignore list; the files of a Kinect labels CSV; the annotations of a pyskl pickle
   (:mod:`ikem_data.pyskl`, loaded once, here, by a restricted unpickler); or the labelled
   segments of PKU-MMD videos (:mod:`ikem_data.pku`). Names, ids, labels and splits are
   checked here; an input that is wrong on its own (a bad label row, an annotation
   without a key) is a failure like a malformed file below;
2. the *check pass*: workers parse every input in full (values checked, nothing kept).
   ``T_max`` is the longest sequence among the files that parse, so a bogus header, or a
   file left out by ``on_error="skip"``, never sizes the store; with ``on_error="stop"``
   a malformed file stops the run here, before anything is written;
3. the store is created under ``<name>.ikem-partial<suffix>`` beside ``out``, its arrays
   and ``attrs["gendata"]`` (``complete`` false) written, and only then renamed to
   ``out``: an interruption before the rename leaves ``out`` as it was (the next run
   removes the leftover), one after it leaves a store that a rerun continues;
4. the *write pass*: workers parse inputs again and return arrays; the parent alone
   writes them, in sample order, a few chunks of ``chunk_size`` samples at a time;
   after each write the data is flushed and then ``next_file``/``written`` (and a
   fingerprint of the files done) are saved, so an interruption (Ctrl-C, kill, a file
   that changed since the check) leaves a store that a rerun of the same command
   continues;
5. files that fail with ``on_error="skip"`` are recorded with their reason and left out
   (samples are written densely; arrays are shrunk to the number written at the end,
   and ``T_max`` to the longest sample stored);
6. the split index arrays are written, and ``complete`` is set last.

Rerun rules. A complete store made with the same arguments and inputs is left alone.
An incomplete one is continued when every argument except ``on_error`` is the same and
the files already done are unchanged (a fingerprint of their names, labels and splits);
files not yet done may have been fixed, removed or added. So each remedy the error
message offers works as written: fix the file, or remove it, and rerun the same
command; or rerun with ``--on-error skip``. Anything else is refused unless
``overwrite``, which replaces a store (also a damaged one that cannot be opened) but
never a file or folder that is not an ikem store.

Every input becomes the same store: ``raw/`` as DESIGN.md §3, ``attrs["layout"]`` =
:data:`ikem_data.layouts.KINECT_V2_25` (NTU, Kinect v2 and PKU-MMD joints alike). A pyskl
pickle is parsed in this process (its arrays are already in memory, and handing them to
workers would copy them); PKU-MMD tasks go to workers one video at a time (all segments
of a video together), so a video is parsed once per pass, not once per segment.

One writer at a time: ``out`` is locked (:func:`ikem_data.locks.exclusive`) for the
whole run, so a second gendata or modalities on it is refused, and the leftover of an
interrupted creation can be removed safely. Parser workers are spawned processes that
exit by themselves when the parent dies, even by SIGKILL (:func:`_watch_parent`), so
nothing is left running.
Memory stays bounded by the data, never by a header: the write buffer and the parsed
files waiting to be written each stay within :data:`WRITE_BUFFER_BYTES` (a ``raw/xyz``
chunk holds fewer than ``chunk_size`` samples when sequences are that long), or one
sample when a single sample is larger; a worker holds one file and its arrays.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ikem_data import __version__
from ikem_data import ntu
from ikem_data.layouts import KINECT_V2_25
from ikem_data.store import is_hdf5_path, open_store

INPUT_FORMATS = ("ntu", "kinect-csv", "pyskl", "pku-mmd")
ON_ERROR = ("stop", "skip")
ID_FIELDS = ("setup", "camera", "subject", "replication")
NUM_JOINTS = 25
#: Upper bound of the write buffer; a chunk larger than this is written alone.
WRITE_BUFFER_BYTES = 256 << 20
#: Parameters that do not identify a store: what to do with a bad file, and the files
#: still to come (a rerun after fixing, removing or adding one continues).
_NOT_IDENTITY = ("on_error", "n_inputs", "inputs_sha1")
#: Root attributes every ikem store has; a store holding only these holds nothing.
_BASE_ATTRS = {"format", "version", "ikem_version"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_STOP_HINT = ("the store is resumable: fix or remove the file and rerun the same command, "
              "or rerun with --on-error skip to record it and go on")


class GendataError(Exception):
    """A user-facing error of ``gendata`` (bad arguments or input); the message is one line."""


# -- worker side -----------------------------------------------------------------------

def _watch_parent(parent):
    """End this worker as soon as its parent process is gone (runs in a daemon thread).

    ``multiprocessing`` gives every spawned child a sentinel of its parent: the read end
    of a pipe whose only write end the parent holds (on Windows, a handle of the parent
    process). The operating system closes it when the parent exits in any way, SIGKILL
    included, so waiting on it needs no polling and, unlike Linux's PR_SET_PDEATHSIG,
    does not fire when merely the thread that spawned the worker ends.
    """
    parent.join()  # returns once the sentinel signals: the parent has exited
    os._exit(1)


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="ikem-watch-parent", daemon=True).start()


def load_sample(task):
    """Parse one input (runs in a worker).

    Args:
        task: ``(source, input_format, body_policy, max_bodies, frames_only)``; the
            source is a file path (NTU, Kinect), or the tuple ``sample["source"]`` of a
            pyskl annotation or PKU-MMD segment, whose first item says where it is.

    Returns:
        ``("ok", xyz (3, T, 25, M) float32, n_frames, n_bodies)``, or with
        ``frames_only`` ``("ok", n_frames)`` (the input is parsed and checked in full, its
        data dropped); ``("error", message)`` for a malformed or unreadable input, the
        message naming the file (and the line or sample where there is one).
    """
    source, input_format, body_policy, max_bodies, frames_only = task
    path = source if isinstance(source, (str, os.PathLike)) else source[0]
    try:
        if input_format == "pyskl":
            from ikem_data.pyskl import load_annotation

            return load_annotation(source, max_bodies, frames_only)
        if input_format == "pku-mmd":
            from ikem_data.pku import load_segment

            return load_segment(source, max_bodies, frames_only)
        if input_format == "ntu":
            from ikem_data.skeleton import load_xyz, read_skeleton

            if frames_only:
                return ("ok", int(read_skeleton(path).n_frames))
            xyz, n_frames, n_bodies = load_xyz(path, body_policy, max_bodies)
        else:
            from ikem_data.kinect import read_kinect_csv

            joints, _ = read_kinect_csv(path)
            if frames_only:
                return ("ok", int(joints.shape[1]))
            xyz = np.zeros(joints.shape + (max_bodies,), dtype=np.float32)
            xyz[..., 0] = joints
            n_frames, n_bodies = joints.shape[1], 1
        return ("ok", xyz, int(n_frames), int(n_bodies))
    except (ValueError, OSError) as exc:  # format errors are ValueErrors naming file and line
        message = str(exc)
        if str(path) not in message:
            message = f"{path}: {message}"
        return ("error", message)


def load_samples(tasks):
    """:func:`load_sample` over a list of tasks (one submission to a worker: a PKU-MMD
    video's segments, which then share the worker's parse of the video)."""
    return [load_sample(task) for task in tasks]


def _group(task):
    """Tasks with the same key go to one worker together (None: alone)."""
    return task[0][1] if task[1] == "pku-mmd" else None


class _Parsers:
    """Runs :func:`load_sample` over tasks in order: here (one worker) or in a process pool.

    The pool is created on first use and shared by both passes; :meth:`close` ends it.
    """

    def __init__(self, workers, input_format):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.input_format = input_format
        self.pool = None

    def map(self, tasks, count, result_bytes=0):
        """Yield ``(key, result)`` for ``tasks`` (an iterable of ``(key, task)``) in order.

        ``result_bytes`` (an upper bound of one result's size) caps the files in flight
        so that finished results waiting for their turn stay within :data:`WRITE_BUFFER_BYTES`.
        """
        if self.workers == 1 or count <= 1:
            return ((key, load_sample(task)) for key, task in tasks)
        if self.pool is None:
            if self.input_format == "ntu":  # compile (or load) the parser once, here,
                from ikem_data.skeleton import parse_skeleton  # so workers load it from the cache

                parse_skeleton(b"0\n")
            # spawn, not fork: the parent runs zarr's I/O thread, and forking a threaded
            # process can deadlock the child.
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_init,
                                            mp_context=multiprocessing.get_context("spawn"))
        grouped = self.input_format == "pku-mmd"
        # PKU-MMD: up to 64 segments of a video per submission, two per worker in flight.
        depth = 2 * self.workers * 64 if grouped else 4 * self.workers
        if result_bytes:
            depth = max(1, min(depth, WRITE_BUFFER_BYTES // result_bytes))
        return _ordered(self.pool, tasks, depth=depth, group_limit=max(1, depth // (2 * self.workers)))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _ordered(pool, tasks, depth, group_limit=1):
    """Submit tasks with at most ``depth`` in flight; yield ``(key, result)`` in task order.

    Consecutive tasks of one :func:`_group` (at most ``group_limit``) are submitted together.
    """
    inflight = deque()  # (keys, tasks, future of the list of their results)
    in_flight = 0
    batch_keys, batch = [], []

    def submit():
        nonlocal in_flight
        inflight.append((list(batch_keys), list(batch), pool.submit(load_samples, list(batch))))
        in_flight += len(batch)
        batch_keys.clear()
        batch.clear()

    def results():
        nonlocal in_flight
        keys, group, future = inflight.popleft()
        in_flight -= len(group)
        try:
            done = future.result()
        except BrokenProcessPool:
            where = group[0][0] if isinstance(group[0][0], (str, os.PathLike)) else group[0][0][0]
            raise GendataError(f"a parser worker process died while reading {where} (killed, or out of "
                               f"memory?); rerun the same command to continue") from None
        return zip(keys, done)

    for key, task in tasks:
        if batch and (_group(task) is None or _group(task) != _group(batch[-1]) or len(batch) >= group_limit):
            submit()
        batch_keys.append(key)
        batch.append(task)
        while in_flight >= depth:
            yield from results()
    if batch:
        submit()
    while inflight:
        yield from results()


# -- planning --------------------------------------------------------------------------

def _sample_line(sample):
    if sample["ids"][0] > 0 and sample["split"] is None:  # raw NTU: label and ids follow from the name
        return f"{sample['name']}\n".encode()  # (hashed alone, as ikem 0.1 did)
    line = f"{sample['name']}\t{sample['label']}\t{sample['split']}"  # Kinect, pyskl: the table's too
    if sample.get("extra"):  # PKU-MMD: and the segment's frames
        line += f"\t{sample['extra']}"
    return f"{line}\n".encode()


def _fingerprint(samples):
    """A short digest of the samples' names, labels and splits, in order."""
    digest = hashlib.sha1()
    for sample in samples:
        digest.update(_sample_line(sample))
    return digest.hexdigest()[:16]


def plan(raw=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed", max_bodies=2,
         ignore_list=None, on_error="stop", chunk_size=16):
    """Resolve the inputs and the parameters that identify a store.

    Args:
        raw: NTU or Kinect folder, pyskl ``.pkl`` file, or PKU-MMD folder.
        input_format, dataset, labels, body_policy, max_bodies, ignore_list, on_error,
            chunk_size: as :func:`gendata`.

    Returns:
        dict with ``params`` (JSON-able; equal params mean "the same command"),
        ``samples`` (list of dicts: name, path, label, ids, split, and for pyskl and
        PKU-MMD ``source``, the task of :func:`load_sample`), ``skipped`` (names left out
        by the ignore list), ``failed`` (inputs wrong on their own, recorded with
        ``on_error="skip"``: ``{"file", "reason"}``) and ``notes``.

    Raises:
        GendataError: a bad argument or input (missing/empty folder, a file name that is
            not a valid sample name or has an id 0, an entry that is not a regular file,
            a bad labels table, a pickle that is not pyskl's or asks for a class outside
            the allowed list, a missing PKU-MMD split file, ...); with
            ``on_error="stop"`` also the first input that is wrong on its own.
    """
    if input_format not in INPUT_FORMATS:
        raise GendataError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, not {input_format!r}")
    if on_error not in ON_ERROR:
        raise GendataError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    if body_policy not in ("listed", "tracked"):
        raise GendataError(f"--bodies must be listed or tracked, not {body_policy!r}")
    if int(chunk_size) < 1 or int(max_bodies) < 1:
        raise GendataError("chunk size and max bodies must be positive")
    if input_format in ("pyskl", "pku-mmd"):
        return _plan_dataset(raw, input_format, dataset, labels, body_policy, max_bodies, ignore_list, on_error,
                             chunk_size)
    samples, skipped = [], []
    try:
        if input_format == "ntu":
            if raw is None:
                raise GendataError("--raw is required for NTU input")
            files = ntu.list_skeleton_files(raw)
            ids = [ntu.parse_name(str(p)) for p in files]
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
        n_inputs=len(samples), inputs_sha1=_fingerprint(samples),
    )
    return dict(params=params, samples=samples, skipped=skipped, failed=[], notes=[])


#: The body selection a store from these inputs has (the input made it, not ikem).
_BODIES = {"pyskl": "pyskl", "pku-mmd": "as-recorded"}


def _plan_dataset(raw, input_format, dataset, labels, body_policy, max_bodies, ignore_list, on_error, chunk_size):
    """:func:`plan` for a pyskl pickle or a PKU-MMD folder."""
    what = "a pyskl annotation pickle (.pkl)" if input_format == "pyskl" else "the PKU-MMD folder"
    if raw is None:
        raise GendataError(f"--raw is required for --input-format {input_format}: {what}")
    if labels is not None:
        raise GendataError("--labels applies to --input-format kinect-csv only")
    if body_policy != "listed":
        raise GendataError(f"--bodies applies to NTU .skeleton input; {input_format} input comes with its bodies "
                           f"already chosen ({_BODIES[input_format]})")
    try:
        ignored = frozenset(ntu.read_ignore_list(ignore_list)) if ignore_list is not None else frozenset()
        if input_format == "pyskl":
            from ikem_data import pyskl

            if dataset not in (None,) + ntu.DATASETS:
                raise GendataError(f"--dataset for a pyskl pickle is ntu60 or ntu120, not {dataset}")
            if not Path(raw).is_file():
                raise GendataError(f"pyskl pickle {raw} does not exist or is not a file")
            found = pyskl.plan_samples(raw, dataset, ignored)
            extra = {}
        else:
            from ikem_data import pku

            found = pku.plan_samples(raw, dataset, ignored)
            extra = dict(split_files=found["split_files"],
                         segment_frames="rows start..end-1 of the skeleton file (0-based, end excluded), as MAMP")
    except GendataError:
        raise
    except (OSError, ValueError) as exc:
        raise GendataError(str(exc)) from None
    samples, failed = found["samples"], found["failed"]
    if failed and on_error == "stop":
        raise GendataError(f"{failed[0]['reason']} (nothing was written: fix the input and rerun, or rerun with "
                           f"--on-error skip to leave it out)")
    if not samples:
        first = f"; first failure: {failed[0]['reason']}" if failed else ""
        raise GendataError(f"no samples left in {raw} ({len(found['skipped'])} ignored, {len(failed)} failed){first}")
    params = dict(
        input_format=input_format, dataset=found["dataset"], raw=str(Path(raw).resolve()), labels=None,
        body_policy=_BODIES[input_format], max_bodies=int(max_bodies),
        ignore_list=str(Path(ignore_list).resolve()) if ignore_list is not None else None,
        on_error=on_error, chunk_size=int(chunk_size), **extra,
        n_inputs=len(samples), inputs_sha1=_fingerprint(samples),
    )
    return dict(params=params, samples=samples, skipped=found["skipped"], failed=failed,
                notes=found.get("notes", []))


def _params_diff(old, new):
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _identity(params):
    return {k: v for k, v in params.items() if k not in _NOT_IDENTITY}


# -- what is at `out` --------------------------------------------------------------------

def _partial_path(out):
    """Where a new store is built before it is renamed to ``out`` (same folder, same suffix)."""
    return out.with_name(f"{out.stem}.ikem-partial{out.suffix}")


def _remove(path):
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _blank_zarr_group(path):
    """A zarr folder holding one group's metadata and nothing else (at most ikem's base
    attributes): what an interruption right after a store's first metadata write leaves.
    None when it is not such a folder; "damaged" when its metadata cannot be read."""
    entries = [p.name for p in path.iterdir()]
    # zarr writes metadata to "<name>.<uuid>.partial" and renames it: a leftover is noise.
    if "zarr.json" not in entries or any(e != "zarr.json" and not e.startswith("zarr.json.") for e in entries):
        return None
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "damaged"
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    return "blank" if set(meta.get("attributes") or {}) <= _BASE_ATTRS else None


def _inspect(out):
    """Classify what is at ``out``.

    Returns:
        ``(kind, store, reason)``: kind ``"absent"``, ``"empty"`` (nothing of value: an
        empty folder or file, or a store holding nothing; replaced without asking),
        ``"store"`` (an ikem store, returned open ``r+``), ``"damaged"`` (an HDF5 file or
        zarr store whose metadata cannot be read; replaced only with ``overwrite``) or
        ``"foreign"`` (never replaced).
    """
    if not out.exists() and not out.is_symlink():
        return "absent", None, ""
    if (out.is_dir() and not any(out.iterdir())) or (out.is_file() and out.stat().st_size == 0):
        return "empty", None, ""
    try:
        store = open_store(out, "r+")
    except (ValueError, FileNotFoundError, OSError) as exc:
        if out.is_dir():
            blank = _blank_zarr_group(out)
            if blank:
                return ("empty" if blank == "blank" else "damaged"), None, str(exc)
        elif out.is_file() and is_hdf5_path(out):
            with open(out, "rb") as handle:
                if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return "damaged", None, str(exc)
        return "foreign", None, str(exc)
    if store.stage("gendata") is None and not list(store.root.keys()) and set(store.attrs) <= _BASE_ATTRS:
        store.close()
        return "empty", None, ""
    return "store", store, ""


def _decide(store, old, params, samples):
    """``("complete" | "resume" | "other", why)`` for an existing store's gendata stage."""
    if old is None:
        return "other", "it has no gendata stage"
    old_params = old.get("params", {})
    if _identity(old_params) != _identity(params):
        return "other", _params_diff(_identity(old_params), _identity(params))
    if old.get("complete"):
        if old_params.get("inputs_sha1") == params["inputs_sha1"]:
            return "complete", ""
        return "other", (f"the inputs changed: {old_params.get('n_inputs')} files then, {len(samples)} now, "
                         f"or other names, labels or splits")
    done = int(old.get("next_file", 0))
    if old.get("done_sha1") is None:  # made by ikem 0.1, which kept no fingerprint of the files done
        if old_params.get("inputs_sha1") != params["inputs_sha1"]:
            return "other", "the inputs changed since it was started"
    elif done > len(samples) or _fingerprint(samples[:done]) != old["done_sha1"]:
        return "other", f"the first {done} inputs, already processed, are not the same files now"
    if "raw/name" not in store:
        return "other", "its raw arrays are missing"
    names = store["raw/name"]
    if int(old.get("written", 0)) + len(samples) - done > names.shape[0]:
        return "other", f"{len(samples) - done} files still to do, more than the store has room for"
    width = names.dtype.itemsize
    if any(len(s["name"].encode()) > width for s in samples[done:]):
        return "other", f"a file still to do has a name longer than the store's {width} bytes"
    return "resume", ""


# -- the writer --------------------------------------------------------------------------

RAW_ARRAYS = ("xyz", "frames", "bodies", "label", "setup", "camera", "subject", "replication", "name")


def _sample_bytes(t_max, max_bodies):
    return 3 * t_max * NUM_JOINTS * max_bodies * 4  # one sample of raw/xyz, float32


def _create_arrays(store, n, t_max, max_bodies, chunk_size, name_width):
    c = chunk_size
    # A chunk is written (and read) whole: with very long sequences it holds fewer samples,
    # so that one chunk stays within the write budget (one sample at the least).
    xyz_chunk = max(1, min(c, WRITE_BUFFER_BYTES // _sample_bytes(t_max, max_bodies)))
    store.create_array("raw/xyz", (n, 3, t_max, NUM_JOINTS, max_bodies), np.float32,
                       chunks=(xyz_chunk, 3, t_max, NUM_JOINTS, max_bodies), overwrite=True)
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
    _flush(store)


def gendata(raw=None, out=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed",
            max_bodies=2, ignore_list=None, on_error="stop", chunk_size=16, workers=None, overwrite=False,
            progress=True, write_chunks=4, stop_after_chunks=None, log=print):
    """Build (or continue) the ``raw/`` part of a store from raw files.

    Args:
        raw: folder of ``.skeleton`` files (NTU) or of Kinect CSVs (optional with
            ``labels``); a pyskl annotation pickle; a PKU-MMD folder (``skeleton/``,
            ``label/``, split files).
        out: store path (zarr directory; HDF5 when it ends in ``.h5``/``.hdf5``).
        input_format: ``"ntu"``, ``"kinect-csv"``, ``"pyskl"`` (3D NTU pickles, see
            :mod:`ikem_data.pyskl`) or ``"pku-mmd"`` (see :mod:`ikem_data.pku`).
        dataset: ``"ntu60"`` or ``"ntu120"`` (NTU, pyskl; inferred from the ids when
            ``None``), ``"pku1"`` or ``"pku2"`` (PKU-MMD; inferred from the split files).
        labels: ``file,label[,split]`` CSV for Kinect input (label 0-based).
        body_policy: ``"listed"`` (reference) or ``"tracked"`` (see ``ikem_data.skeleton``);
            NTU files only (pyskl and PKU-MMD inputs come with their bodies chosen).
        max_bodies: slots M.
        ignore_list: text file of sample names to leave out; default: the official
            missing-skeleton list of the dataset (packaged) for NTU files, none otherwise
            (PKU-MMD: video or ``<video>_<k>`` names).
        on_error: a malformed file: ``"stop"`` (raise; before anything is written when
            the check pass finds it, else the store stays resumable) or ``"skip"``
            (record it and go on). Not part of the store's identity: a rerun may switch.
        chunk_size: samples per chunk of ``raw/xyz``.
        workers: parser processes (default ``os.cpu_count()``; 1 parses in this process).
        overwrite: replace a store made with other arguments, or a damaged one.
        progress: show tqdm bars (files/s).
        write_chunks: chunks of samples gathered per write (zarr compresses the chunks of
            one write in parallel), capped so the buffer stays within
            :data:`WRITE_BUFFER_BYTES`; the state is saved after each write. Not a
            parameter of the store: a rerun may use another value.
        stop_after_chunks: testing aid: raise ``KeyboardInterrupt`` after this many
            writes in this call, as a Ctrl-C would.
        log: callable for one-line messages.

    Returns:
        the final ``attrs["gendata"]`` dict (``complete`` true).

    Raises:
        GendataError: bad arguments or input, a store made with other arguments, another
            process writing ``out``, or (with ``on_error="stop"``) a malformed file: the
            message names file and line and says what to do.
        KeyboardInterrupt: interrupted; the store (if created) is resumable.
    """
    if out is None:
        raise GendataError("--out is required")
    out = Path(out)
    job = plan(raw, input_format=input_format, dataset=dataset, labels=labels, body_policy=body_policy,
               max_bodies=max_bodies, ignore_list=ignore_list, on_error=on_error, chunk_size=chunk_size)
    from ikem_data.locks import LockedError, exclusive

    try:
        with exclusive(out, "store", log):  # one writer: a second gendata (or modalities) is refused
            return _gendata(out, job, overwrite, workers, progress, write_chunks, stop_after_chunks, log)
    except LockedError as exc:
        raise GendataError(str(exc)) from None


def _gendata(out, job, overwrite, workers, progress, write_chunks, stop_after_chunks, log):
    """:func:`gendata` once ``out`` is locked for this process."""
    params, samples = job["params"], job["samples"]
    partial = _partial_path(out)
    if partial.exists() or partial.is_symlink():  # a creation that was interrupted (we hold the lock)
        _remove(partial)
    kind, store, why = _inspect(out)
    state = None
    if kind == "foreign":
        raise GendataError(f"{out} exists and is not an ikem store ({why}); nothing was changed")
    if kind == "damaged" and not overwrite:
        raise GendataError(f"{out} is a store that cannot be opened ({why}), e.g. left by an interrupted "
                           f"write; rerun with --overwrite to replace it")
    if kind == "store":
        old = store.stage("gendata")
        decision, why = _decide(store, old, params, samples)
        if decision == "complete":
            store.close()
            log(f"{out} is already complete ({old.get('n_samples')} samples); nothing to do")
            return old
        if decision == "resume":
            state = dict(old, params=params)  # on_error and the files still to do are this run's
            recorded = {f["file"] for f in state["failed"]}
            state["failed"] = state["failed"] + [f for f in job["failed"] if f["file"] not in recorded]
            log(f"resuming {out}: {old['written']} samples written, {old['next_file']} of {len(samples)} files done")
            if store.attrs.get("layout") is None:  # made before stores recorded their layout
                store.attrs["layout"] = KINECT_V2_25
        else:
            store.close()
            store = None
            if not overwrite:
                raise GendataError(f"{out} was made with other arguments ({why}); use --overwrite to replace it")

    # A pyskl pickle's arrays are in this process already: sending them to workers would copy them.
    parsers = _Parsers(1 if params["input_format"] == "pyskl" else workers, params["input_format"])
    try:
        if state is None:
            t_max, failures = _check(samples, params, parsers, progress)
            state = _create(out, partial, job, t_max)
            log(f"{len(samples)} {'files' if params['input_format'] in ('ntu', 'kinect-csv') else 'samples'}, "
                f"longest sequence {t_max} frames"
                + (f", {len(job['skipped'])} ignored by the list" if job["skipped"] else "")
                + (f"; {len(job['failed'])} inputs failed the plan and are left out" if job["failed"] else "")
                + (f"; {len(failures)} failed the check and will be left out" if failures else ""))
            store = open_store(out, "r+")
        try:
            state = _run(store, state, samples, params, parsers, progress, write_chunks, stop_after_chunks)
            if state["next_file"] >= len(samples) and not state["complete"]:
                state = _finish(store, state, samples, params, job["skipped"], job["notes"])
                log(f"wrote {state['n_samples']} samples to {out}"
                    + (f"; {len(state['failed'])} files failed (see ikem-data info)" if state["failed"] else "")
                    + (f"; {state['skipped']} ignored" if state["skipped"] else ""))
                for note in state.get("notes", []):
                    log(f"note: {note}")
            return state
        finally:
            store.close()
    finally:
        parsers.close()


def _check(samples, params, parsers, progress):
    """The check pass: parse every file in full; ``(T_max over the files that parse, failures)``.

    Raises:
        GendataError: with ``on_error="stop"``, the first malformed file (nothing written
            yet); with either, when no file parses.
    """
    from tqdm import tqdm

    tasks = ((k, (s.get("source", s["path"]), params["input_format"], params["body_policy"], params["max_bodies"],
                  True)) for k, s in enumerate(samples))
    t_max, failures = 0, []
    bar = tqdm(total=len(samples), unit="file", disable=not progress, smoothing=0.1, desc="checking")
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


def _create(out, partial, job, t_max):
    """Build the new store at ``partial`` (arrays, then the state), then rename it to ``out``."""
    params, samples = job["params"], job["samples"]
    name_width = max(1, max(len(s["name"].encode()) for s in samples))
    state = dict(complete=False, params=params, ikem_version=__version__, t_max=max(int(t_max), 1),
                 next_file=0, written=0, done_sha1=_fingerprint([]), failed=list(job["failed"]),
                 skipped=len(job["skipped"]),
                 ignored=list(job["skipped"]), started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store = open_store(partial, "w")
    try:
        _create_arrays(store, len(samples), state["t_max"], params["max_bodies"], params["chunk_size"], name_width)
        store.attrs["layout"] = KINECT_V2_25  # NTU, Kinect v2 and PKU-MMD: the same 25 joints
        _save_state(store, state)
    finally:
        store.close()
    if out.exists() or out.is_symlink():  # decided replaceable by the caller
        _remove(out)
    os.replace(partial, out)
    return state


def _run(store, state, samples, params, parsers, progress, write_chunks, stop_after_chunks):
    """The write pass: parse from ``state["next_file"]`` on and write chunk by chunk."""
    m, t_max = params["max_bodies"], state["t_max"]
    start = state["next_file"]
    if start >= len(samples):
        return state
    arrays = {name: store[f"raw/{name}"] for name in RAW_ARRAYS}
    chunk = int(arrays["xyz"].chunks[0])  # chunk_size, or fewer for very long sequences
    sample_bytes = _sample_bytes(t_max, m)
    # A multiple of the chunk (writes stay chunk-aligned), within the byte budget.
    block = chunk * max(1, min(int(write_chunks), WRITE_BUFFER_BYTES // (chunk * sample_bytes)))
    buf = np.zeros((block, 3, t_max, NUM_JOINTS, m), dtype=np.float32)
    meta = {name: [] for name in RAW_ARRAYS if name != "xyz"}
    pending_failed = []
    chunks_done = 0
    done = hashlib.sha1()  # running fingerprint of samples[:next_file], as _fingerprint computes it
    for sample in samples[:start]:
        done.update(_sample_line(sample))
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
            done.update(_sample_line(sample))
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

    from tqdm import tqdm

    tasks = ((k, (samples[k].get("source", samples[k]["path"]), params["input_format"], params["body_policy"], m,
                  False)) for k in range(start, len(samples)))
    bar = tqdm(total=len(samples), initial=start, unit="file", disable=not progress, smoothing=0.1,
               desc="gendata")
    try:
        for k, result in parsers.map(tasks, len(samples) - start, result_bytes=sample_bytes):
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


def _finish(store, state, samples, params, skipped, notes=()):
    """Shrink to the samples written (and T_max to the longest), write the splits, then mark complete."""
    n = state["written"]
    if n == 0:
        first = state["failed"][0]["reason"] if state["failed"] else "none recorded"
        # Start over on the next run rather than stay stuck on an empty store.
        state.update(next_file=0, failed=[], done_sha1=_fingerprint([]))
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
    if params["input_format"] == "ntu":
        splits = ntu.benchmark_splits([ntu.parse_name(name) for name in names], params["dataset"])
    elif params["input_format"] in ("pyskl", "pku-mmd"):
        splits = _membership_splits(names, samples)
    else:
        by_name = {s["name"]: s["split"] for s in samples}
        splits = {}
        if any(by_name[name] is not None for name in names):
            parts = {"train": [], "val": []}
            for index, name in enumerate(names):
                if by_name[name] is not None:
                    parts[by_name[name]].append(index)
            splits["custom"] = {part: np.asarray(v, dtype=np.int64) for part, v in parts.items()}
        else:
            notes.append(f"the labels table {params['labels']} has no split column, so the store has no "
                         f"benchmark (splits/) and training needs one: add a split column (train or val on "
                         f"every row) and rerun gendata with --overwrite")
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
    _flush(store)
    return state
