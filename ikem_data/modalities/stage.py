"""The store stage behind ``ikem-data modalities`` (DESIGN.md §3-§4, METHOD.md §2-§3).

Reads ``raw/xyz`` and ``raw/frames`` chunk by chunk, runs :func:`~ikem_data.modalities.preprocess.
preprocess` and :func:`~ikem_data.modalities.kernels.compute_modalities`, and writes

- ``modalities/<name>`` (N, 3, t_length, 25, M) float32 for the six names, chunks of
  ``chunk_size`` samples;
- ``modalities/valid_length`` (N,) int32;
- ``attrs["modalities"]`` = ``{"complete", "params", "done", "empty_samples", ...}``.

Memory stays bounded by two steps of input and two of output (a pipeline: read ahead,
kernels, writes behind; see ``_run_steps``). Progress (``done`` = samples written) is recorded
after every step whose writes are done, so a rerun with the same parameters continues where it stopped; a
complete stage with the same parameters is left alone; other parameters are refused
unless ``overwrite``. ``complete`` becomes true last.

An all-empty sample (L = 0: body 0 joint 1 is zero in every frame) is an error by
default, naming the store and the sample. With ``on_empty="skip"`` its modalities stay
all zeros, its valid length is 0, and its name is listed in
``attrs["modalities"]["empty_samples"]``, so readers can drop it.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ikem_data import __version__
from ikem_data.layouts import store_layout
from ikem_data.locks import exclusive
from ikem_data.modalities.kernels import T_REF, compute_modalities
from ikem_data.names import MODALITIES
from ikem_data.modalities.preprocess import SampleError, check_params, preprocess
from ikem_data.store import StoreError, open_store
from ikem_data.store_check import array_names as _array_names, check_content

STAGE = "modalities"
BONE_PAIR_SETS = ("ikem", "crossclr")
#: Parameters that define the stage's output; a rerun must match them to resume.
PARAM_KEYS = ("t_length", "rotation_sign", "bone_pairs", "true_timeline", "t_ref", "on_empty",
              "names")


class StageError(ValueError):
    """The stage cannot run on this store; the message names the store and the reason."""


def stage_params(t_length=50, rotation_sign="sequence", bone_pairs="ikem", true_timeline=True,
                 on_empty="error"):
    """Validated stage parameters as a JSON-able dict.

    Raises:
        StageError: an unknown switch value or ``t_length < 3``.
    """
    try:
        check_params(t_length, rotation_sign, on_empty)
    except ValueError as err:
        raise StageError(str(err)) from None
    if bone_pairs not in BONE_PAIR_SETS:
        raise StageError(f"unknown bone_pairs {bone_pairs!r}; valid: {', '.join(BONE_PAIR_SETS)}")
    return {"t_length": int(t_length), "rotation_sign": rotation_sign, "bone_pairs": bone_pairs,
            "true_timeline": bool(true_timeline), "t_ref": T_REF, "on_empty": on_empty,
            "names": list(MODALITIES)}


def _check_raw(store):
    """The store's :class:`~ikem_data.layouts.Layout`, once its raw data is found complete.

    Raises:
        StageError: missing raw arrays, gendata not complete, a layout the modalities have
            no table for, or raw arrays of the wrong shape.
    """
    for name in ("raw/xyz", "raw/frames", "raw/name"):
        if name not in store:
            raise StageError(f"store {store.path} has no {name}; run `ikem-data gendata` first")
    if not store.is_complete("gendata"):
        raise StageError(f"store {store.path}: gendata is not complete (attrs['gendata']['complete'] "
                         f"is not true); finish `ikem-data gendata` first")
    try:
        layout = store_layout(store)
    except ValueError as err:
        raise StageError(f"{err}: the modalities cannot be computed for it") from None
    xyz = store["raw/xyz"]
    v = layout.num_joints
    if len(xyz.shape) != 5 or xyz.shape[1] != 3 or xyz.shape[3] != v:
        raise StageError(f"store {store.path}: raw/xyz has shape {tuple(xyz.shape)}, expected (N, 3, T, {v}, M) "
                         f"for layout {layout.name}")
    if store["raw/frames"].shape[0] != xyz.shape[0]:
        raise StageError(f"store {store.path}: raw/frames has {store['raw/frames'].shape[0]} entries "
                         f"for {xyz.shape[0]} samples")
    return layout


def copy_raw(source, out, overwrite=False, block=256):
    """Copy ``raw/``, ``splits/`` and the attributes of store ``source`` into a new ``out``.

    Resumable: a finished copy of the same source, made from its present content
    (``attrs["copy"]`` records a fingerprint of it), is kept; an unfinished or outdated one
    is started again. ``attrs["gendata"]`` is written last.

    Raises:
        StageError: ``out`` is ``source`` itself; the source is not a complete raw store;
            ``out`` holds anything but a copy of this source (a finished one is kept, an
            unfinished one restarted) and ``overwrite`` is not given.
    """
    if Path(out).resolve() == Path(source).resolve():
        raise StageError(f"--from {source} and --out {out} are the same store; to add modalities to it in place, "
                         "drop --from")
    with open_store(source, "r") as src:
        _check_raw(src)
        origin = str(src.path.resolve())
        # The source's raw/ and splits/ as they are now: a copy of an older content is redone.
        content = src.fingerprint("raw/") + src.fingerprint("splits/")
        try:
            with open_store(out, "r", check=("gendata",) if overwrite else True) as dst:
                copied = dst.attrs.get("copy") or {}
                if copied.get("source") == origin and copied.get("complete") and dst.is_complete("gendata") \
                        and copied.get("source_fingerprint") in (None, content):
                    return
                if copied.get("source") != origin and not overwrite:
                    raise StageError(f"store {dst.path} already exists and is not a copy of {origin}; pass "
                                     "--overwrite to replace it, or drop --from to add modalities in place")
        except FileNotFoundError:
            pass
        with open_store(out, "w") as dst:
            dst.attrs["copy"] = {"complete": False, "source": origin}
            for name in _array_names(src, "raw") + _array_names(src, "splits"):
                a = src[name]
                chunks = getattr(a, "chunks", None)
                b = dst.create_array(name, a.shape, a.dtype, chunks=chunks)
                if len(a.shape) == 0 or a.shape[0] == 0:
                    continue
                for start in range(0, a.shape[0], block):
                    b[start:start + block] = a[start:start + block]
            for key, value in src.attrs.items():
                if key not in ("format", "version", "ikem_version", "every_chunk_stored", "gendata", STAGE, "copy"):
                    dst.attrs[key] = value
            dst.attrs["copy"] = {"complete": True, "source": origin, "source_fingerprint": content}
            dst.attrs["gendata"] = src.attrs["gendata"]


def _damaged(store):
    """Why the complete modalities stage of ``store`` fails the open check, or None."""
    try:
        check_content(store, store.files if store.kind == "zarr" else None, stages=("modalities",))
    except StoreError as exc:
        return str(exc)
    return None


def _create_float_array(store, name, shape, chunks):
    """A float32 array for derived data: zstd level 1 instead of the store's default 5. On
    modality chunks level 1 compresses as well (ratio ~1.8 both) and 6x faster, and
    compression is what bounds this stage."""
    return store.create_array(name, shape, np.float32, chunks=chunks, overwrite=True, clevel=1)


def _write(array, start, stop, values):
    array[start:stop] = values


def build_modalities(out, source=None, t_length=50, rotation_sign="sequence", bone_pairs="ikem",
                     true_timeline=True, on_empty="error", chunk_size=64, workers=None,
                     overwrite=False, progress=True, step_chunks=4):
    """Add ``modalities/`` to a store (or to a copy of ``source``), chunk by chunk.

    Args:
        out: store to write (in place), or the new store when ``source`` is given.
        source: optional raw store to copy ``raw/``, ``splits/`` and attributes from.
        t_length: frames after the resize (METHOD.md §2 step 4; reference 50).
        rotation_sign: ``"sequence"`` (reference) or ``"per_frame"`` (METHOD.md §11.7).
        bone_pairs: ``"ikem"`` (reference) or ``"crossclr"``.
        true_timeline: tau = 50 / header frames (reference) or 1.
        on_empty: ``"error"`` or ``"skip"`` for samples with no valid frame.
        chunk_size: samples per chunk of the output arrays.
        workers: numba threads (None: numba's default, all cores).
        overwrite: replace a stage written with other parameters.
        progress: show a tqdm bar.
        step_chunks: chunks processed (and held in memory) per step; progress is
            recorded after each step.

    Returns:
        ``(status, attrs)``: status ``"written"``, ``"resumed"`` or ``"unchanged"`` (a
        complete stage with the same parameters), and the final ``attrs["modalities"]``.

    Raises:
        StageError: no ``raw/`` or gendata not complete, different parameters without
            ``overwrite``, or a bad sample (NaN/inf, L = 0 with ``on_empty="error"``, a
            non-positive frame count); the message names the store and the sample.
        LockedError: another process is writing ``out``.
    """
    params = stage_params(t_length, rotation_sign, bone_pairs, true_timeline, on_empty)
    if int(chunk_size) < 1:
        raise StageError(f"chunk size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
    if source is None and not Path(out).exists():  # refused before the lock: no lock file for a store that is not there
        raise StageError(f"no store at {out}: write it with `ikem-data gendata` first, or give --from RAW")
    from ikem_data.files import NoRoomError, is_no_room, no_room
    from ikem_data.store import KEPT

    try:
        with exclusive(out, "store"):
            if source is not None:
                copy_raw(source, out, overwrite=overwrite)
            return _build(out, params, chunk_size, workers, on_empty, overwrite, progress, step_chunks)
    except OSError as exc:  # a full disk or the file-size limit: one line; the progress saved last holds
        if not is_no_room(exc):
            raise
        raise StageError(str(exc) if isinstance(exc, NoRoomError) else str(no_room(exc, out, "store", KEPT))) \
            from None


def _build(out, params, chunk_size, workers, on_empty, overwrite, progress, step_chunks):
    """The stage on ``out`` (raw data in place, lock held): see :func:`build_modalities`."""
    from ikem_data.progress import progress_bar

    # With overwrite, the stage to be replaced may be damaged (the open check would refuse it).
    with open_store(out, "r+", check=("gendata",) if overwrite else True) as store:
        layout = _check_raw(store)
        xyz = store["raw/xyz"]
        n, _, _, v, m = xyz.shape
        shape = (n, 3, params["t_length"], v, m)
        old = store.stage(STAGE)
        resume = False
        if old is not None:
            same = {k: old.get("params", {}).get(k) for k in PARAM_KEYS} == params
            damaged = _damaged(store) if same and old.get("complete") else None
            # raw/ rewritten since (gendata --overwrite, a hand edit): the modalities are stale.
            stale = old.get("raw_fingerprint") not in (None, store.fingerprint("raw/"))
            if same and old.get("complete") and damaged is None and not stale:
                return "unchanged", old
            if stale and not overwrite:
                raise StageError(f"store {store.path}: raw/ changed since its modalities were computed (fingerprint "
                                 f"{old['raw_fingerprint']} -> {store.fingerprint('raw/')}); pass --overwrite to "
                                 "recompute them")
            if damaged is not None or stale:  # only reached with overwrite: recompute it all
                same = False
            if not same and not overwrite:
                raise StageError(f"store {store.path} already has modalities with other parameters "
                                 f"({old.get('params')}); pass --overwrite to replace them")
            resume = same and not stale and all(f"{STAGE}/{k}" in store and tuple(store[f'{STAGE}/{k}'].shape) == shape
                                  for k in MODALITIES)
        done = int(old.get("done", 0)) if resume else 0
        empty = list(old.get("empty_samples", [])) if resume else []
        attrs = {"complete": False, "params": params, "done": done, "samples": n,
                 "empty_samples": empty, "chunk_size": chunk_size, "ikem_version": __version__,
                 "raw_fingerprint": store.fingerprint("raw/")}  # what the modalities are computed from
        store.attrs[STAGE] = attrs
        if not resume:
            for name in MODALITIES:
                _create_float_array(store, f"{STAGE}/{name}", shape,
                                    (chunk_size, 3, params["t_length"], v, m))
            store.create_array(f"{STAGE}/valid_length", (n,), np.int32, chunks=(chunk_size,),
                               overwrite=True)
        started = time.time()
        bar = progress_bar(total=n, initial=done, unit="sample", desc="modalities", disable=not progress)

        def record(stop, skipped_names):
            empty.extend(skipped_names)
            attrs.update(done=stop, empty_samples=empty)
            store.attrs[STAGE] = attrs
            store.flush()  # an HDF5 store killed after this step reopens with its progress

        _run_steps(store, params, layout, done, n, chunk_size * max(1, step_chunks), workers, on_empty, record,
                   bar.update)
        bar.close()
        attrs.update(complete=True, done=n, seconds=round(time.time() - started, 3))
        store.attrs[STAGE] = attrs
        return ("resumed" if done else "written"), attrs


def _read(store, start, stop, block):
    """Raw positions of ``start:stop`` into the reused ``block`` (float32), and the frames."""
    return (store.read_into("raw/xyz", start, stop, block[:stop - start]),
            np.asarray(store["raw/frames"][start:stop], dtype=np.int64))


def _run_steps(store, params, layout, done, n, step, workers, on_empty, record, advance):
    """Samples ``done:n`` in steps of ``step``, as a pipeline of three overlapping parts:
    the next step is read (zarr decodes in its own threads) while this one runs through
    the kernels (numba threads, without the GIL) and the previous one is compressed and
    written. Compression is what bounds the stage; the overlap keeps both cores busy.

    Progress reaches ``record(stop, empty_names)`` only once a step's writes are all
    done, also when a later step fails, so a rerun resumes after the last whole step.
    Two sets of output buffers alternate between the step being computed and the one
    being written, so memory stays at about two steps of output plus two of input.
    """
    xyz = store["raw/xyz"]
    _, _, t_max, v, m = xyz.shape
    shape = (step, 3, params["t_length"], v, m)
    buffers = [{name: np.empty(shape, dtype=np.float32) for name in MODALITIES} for _ in range(2)]
    blocks = [np.empty((step, 3, t_max, v, m), dtype=xyz.dtype) for _ in range(2)]
    targets = {name: store.writer(f"{STAGE}/{name}") for name in MODALITIES}
    targets["valid_length"] = store.writer(f"{STAGE}/valid_length")
    starts = list(range(done, n, step))
    with ThreadPoolExecutor(max_workers=len(targets) + 1) as pool:
        reading = pool.submit(_read, store, starts[0], min(starts[0] + step, n), blocks[0]) if starts else None
        pending = None  # (start, stop, empty names, write futures) of the step being written
        try:
            for k, start in enumerate(starts):
                stop = min(start + step, n)
                block, frames = reading.result()
                if k + 1 < len(starts):
                    reading = pool.submit(_read, store, stop, min(stop + step, n), blocks[(k + 1) % 2])
                out = {name: buf[:stop - start] for name, buf in buffers[k % 2].items()}
                lengths = _compute(store, params, layout, start, block, frames, out, workers, on_empty)
                skipped = [store.names(start + int(i), start + int(i) + 1)[0] for i in np.flatnonzero(lengths == 0)]
                previous, pending = pending, None
                _finish(previous, record, advance)
                values = dict(out, valid_length=lengths)
                pending = (start, stop, skipped, [pool.submit(_write, targets[name], start, stop, values[name])
                                                  for name in targets])
        finally:
            _finish(pending, record, advance)


def _finish(pending, record, advance):
    """Wait for a step's writes, then record its progress."""
    if pending is not None:
        start, stop, skipped, futures = pending
        for future in futures:
            future.result()
        record(stop, skipped)
        advance(stop - start)


def _compute(store, params, layout, start, block, frames, out, workers, on_empty):
    """Preprocess and the six modalities of one step into ``out``; valid lengths back.

    Raises:
        StageError: a bad sample, named with its store index.
    """
    try:
        _, lengths = preprocess(block, params["t_length"], params["rotation_sign"], workers=workers,
                                on_empty=on_empty, out=out["joint"], layout=layout)
        frames[lengths == 0] = 1  # all-zero output either way; keeps tau finite
        compute_modalities(out["joint"], frames, MODALITIES, params["bone_pairs"], params["true_timeline"],
                           workers=workers, out=out, layout=layout)
    except SampleError as exc:
        name = store.names(start + exc.index, start + exc.index + 1)[0]
        raise StageError(f"store {store.path}: sample {name} (index {start + exc.index}): {exc.reason}") from None
    return lengths
