"""Raw skeleton files into the ``raw/`` part of an ikem store: parallel, streaming, resumable.

Flow (DESIGN.md §3):

1. list the inputs (:func:`~ikem_data.gendata.plan.plan`) with the reader of the input
   format (:mod:`ikem_data.formats.registry`): NTU ``.skeleton`` files sorted by name,
   minus the ignore list; the files of a Kinect labels CSV; the annotations of a pyskl
   pickle (loaded once, in this process, by a restricted unpickler); the labelled
   segments of PKU-MMD videos; NW-UCLA, UTD-MHAD and MSRC-12 sequences or instances.
   Names, ids, labels and splits are checked here; an input that
   is wrong on its own (a bad label row, an annotation without a key) is a failure like
   a malformed file below;
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

Every input becomes the same store: ``raw/`` as DESIGN.md §3, ``attrs["layout"]`` = the
format's layout (``kinect_v2_25`` for NTU, Kinect v2 and PKU-MMD; ``kinect_v1_20`` for
NW-UCLA, UTD-MHAD and MSRC-12). A format marked ``in_process`` (pyskl: its arrays are in
memory already, and handing them to workers would copy them) is parsed here; a reader with
a ``group_key`` (PKU-MMD) has its tasks go to workers one group at a time (all segments of
a video together), so a video is parsed once per pass, not once per segment.

One writer at a time: ``out`` is locked (:func:`ikem_data.locks.exclusive`) for the
whole run, so a second gendata or modalities on it is refused, and the leftover of an
interrupted creation can be removed safely. Parser workers are spawned processes that
exit by themselves when the parent dies, even by SIGKILL
(:func:`ikem_data.gendata.workers._watch_parent`), so nothing is left running.
Memory stays bounded by the data, never by a header: the write buffer and the parsed
files waiting to be written each stay within
:data:`ikem_data.gendata.write.WRITE_BUFFER_BYTES` (a ``raw/xyz`` chunk holds fewer than
``chunk_size`` samples when sequences are that long), or one sample when a single sample
is larger; a worker holds one file and its arrays.

Where each part lives (this module keeps the entry point, :func:`gendata`, and the order
of the steps):

- :mod:`ikem_data.gendata.plan`: step 1, ``plan()`` per input format, and the
  fingerprint of the inputs that recognises a rerun;
- :mod:`ikem_data.gendata.workers`: the parser processes (``load_sample()``);
- :mod:`ikem_data.gendata.out`: what is at ``out`` and the rerun rules (continue,
  replace, refuse);
- :mod:`ikem_data.gendata.write`: steps 2 to 6, the check pass, the store's creation,
  the write pass and finishing;
- :mod:`ikem_data.gendata.errors`: :class:`GendataError`, raised by all of them.
"""

from __future__ import annotations

from pathlib import Path

from ikem_data.gendata.errors import GendataError
from ikem_data.gendata.plan import INPUT_FORMATS, ON_ERROR, plan
from ikem_data.gendata.out import decide, inspect_out, partial_path
from ikem_data.gendata.workers import Parsers, load_sample
from ikem_data.gendata.write import check_pass, create_store, finish_store, write_pass
from ikem_data.layouts import KINECT_V2_25
from ikem_data.store import open_store, remove_path

# The names other code imports from here; the rest is in the gendata_* modules (a test
# that patches a module attribute patches the module that uses it).
__all__ = ["GendataError", "INPUT_FORMATS", "ON_ERROR", "gendata", "load_sample", "plan"]


def gendata(raw=None, out=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed",
            max_bodies=None, ignore_list=None, on_error="stop", chunk_size=16, workers=None, overwrite=False,
            progress=True, write_chunks=4, stop_after_chunks=None, log=print):
    """Build (or continue) the ``raw/`` part of a store from raw files.

    Args:
        raw: what the format's entry names (``InputFormat.raw``): folder of ``.skeleton``
            files (NTU) or of Kinect CSVs (optional with ``labels``); a pyskl annotation
            pickle; a PKU-MMD folder (``skeleton/``, ``label/``, split files); ...
        out: store path (zarr directory; HDF5 when it ends in ``.h5``/``.hdf5``).
        input_format: a name of :data:`ikem_data.formats.registry.FORMATS`: ``"ntu"``,
            ``"kinect-csv"``, ``"pyskl"`` (3D NTU pickles), ``"pku-mmd"``, ``"nwucla"``,
            ``"utd-mhad"``, ``"msrc12"``; each reader module documents its input.
        dataset: ``"ntu60"`` or ``"ntu120"`` (NTU, pyskl; inferred from the ids when
            ``None``), ``"pku1"`` or ``"pku2"`` (PKU-MMD; inferred from the split files);
            the other formats have one dataset each.
        labels: ``file,label[,split]`` CSV for Kinect input (label 0-based).
        body_policy: ``"listed"`` (reference) or ``"tracked"`` (see ``ikem_data.formats.skeleton``);
            NTU files only (pyskl and PKU-MMD inputs come with their bodies chosen).
        max_bodies: slots M; None: the format's default (2; 1 for the one-person datasets
            NW-UCLA, UTD-MHAD, MSRC-12).
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
            :data:`ikem_data.gendata.write.WRITE_BUFFER_BYTES`; the state is saved after
            each write. Not a parameter of the store: a rerun may use another value.
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

    from ikem_data.files import NoRoomError, is_no_room, no_room
    from ikem_data.store import KEPT

    try:
        with exclusive(out, "store", log):  # one writer: a second gendata (or modalities) is refused
            return _gendata(out, job, overwrite, workers, progress, write_chunks, stop_after_chunks, log)
    except LockedError as exc:
        raise GendataError(str(exc)) from None
    except OSError as exc:  # a full disk or the file-size limit: one line; the state saved last holds
        if not is_no_room(exc):
            raise
        raise GendataError(str(exc) if isinstance(exc, NoRoomError) else str(no_room(exc, out, "store", KEPT))) \
            from None


def _gendata(out, job, overwrite, workers, progress, write_chunks, stop_after_chunks, log):
    """:func:`gendata` once ``out`` is locked for this process."""
    params, samples = job["params"], job["samples"]
    partial = partial_path(out)
    remove_path(partial)  # a creation that was interrupted, if any (we hold the lock)
    kind, store, why = inspect_out(out)
    state = None
    if kind == "foreign":
        raise GendataError(f"{out} exists and is not an ikem store ({why}); nothing was changed")
    if kind == "damaged" and not overwrite:
        raise GendataError(f"{out} is a store that cannot be opened ({why}), e.g. left by an interrupted "
                           f"write; rerun with --overwrite to replace it")
    if kind == "store":
        old = store.stage("gendata")
        decision, why = decide(store, old, params, samples)
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

    # A pyskl pickle's arrays are in this process already (in_process): sending them to workers would copy them.
    fmt = job["format"]
    parsers = Parsers(1 if fmt.in_process else workers, fmt)
    try:
        if state is None:
            t_max, failures = check_pass(samples, params, parsers, progress)
            state = create_store(out, partial, job, t_max)
            log(f"{len(samples)} {fmt.unit}, "
                f"longest sequence {t_max} frames"
                + (f", {len(job['skipped'])} ignored by the list" if job["skipped"] else "")
                + (f"; {len(job['failed'])} inputs failed the plan and are left out" if job["failed"] else "")
                + (f"; {len(failures)} failed the check and will be left out" if failures else ""))
            store = open_store(out, "r+")
        try:
            state = write_pass(store, state, samples, params, parsers, progress, write_chunks, stop_after_chunks)
            if state["next_file"] >= len(samples) and not state["complete"]:
                state = finish_store(store, state, samples, params, job["skipped"], job["notes"])
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
