"""The inputs of a ``gendata`` run (step 1 of :mod:`ikem_data.gendata.run`): :func:`plan`
lists them through the input format's reader and resolves the parameters that identify the store.

The format's entry in :mod:`ikem_data.formats.registry` says what ``--raw`` is and which
options apply; its reader's ``plan_samples`` lists the samples (NTU ``.skeleton`` files
sorted by name minus the ignore list, the files of a Kinect labels CSV, the annotations of
a pyskl pickle loaded once by a restricted unpickler, the labelled segments of PKU-MMD
videos, ...). :func:`fingerprint` (names, labels and splits, in order) is how a run
recognises the same inputs again: the whole list (``inputs_sha1``) and the files already
done (``done_sha1``, see :mod:`ikem_data.gendata.write`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ikem_data.formats import ntu
from ikem_data.formats.registry import FORMATS, get_format
from ikem_data.gendata.errors import GendataError

#: The format names known when gendata is imported (:data:`ikem_data.formats.registry.FORMATS`).
INPUT_FORMATS = tuple(FORMATS)
ON_ERROR = ("stop", "skip")


def sample_line(sample):
    """The bytes :func:`fingerprint` hashes for one sample (the write pass hashes them as it goes)."""
    if sample["ids"][0] > 0 and sample["split"] is None:  # raw NTU: label and ids follow from the name
        return f"{sample['name']}\n".encode()  # (hashed alone, as ikem 0.1 did)
    line = f"{sample['name']}\t{sample['label']}\t{sample['split']}"  # Kinect, pyskl: the table's too
    if sample.get("extra"):  # PKU-MMD: and the segment's frames
        line += f"\t{sample['extra']}"
    return f"{line}\n".encode()


def fingerprint(samples):
    """A short digest of the samples' names, labels and splits, in order."""
    digest = hashlib.sha1()
    for sample in samples:
        digest.update(sample_line(sample))
    return digest.hexdigest()[:16]


def files_fingerprint(samples, raw=None) -> str:
    """A short digest of the size and modification time of every input file (and of ``raw``
    when it is one file, e.g. a pyskl pickle), in order: it changes when a file is edited in
    place, which the names, labels and splits of :func:`fingerprint` do not show. A path
    that is not a file (a pickle's key, a segment of a video) counts as its own name."""
    digest = hashlib.sha1()
    paths = ([str(raw)] if raw is not None and os.path.isfile(raw) else []) + [str(s["path"]) for s in samples]
    seen = set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\n".encode())
    return digest.hexdigest()[:16]


def plan(raw=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed", max_bodies=None,
         ignore_list=None, on_error="stop", chunk_size=16):
    """Resolve the inputs and the parameters that identify a store.

    Args:
        raw: what the format's entry says (:attr:`~ikem_data.formats.registry.InputFormat.raw`).
        input_format, dataset, labels, body_policy, max_bodies, ignore_list, on_error,
            chunk_size: as :func:`ikem_data.gendata.run.gendata`.

    Returns:
        dict with ``params`` (JSON-able; equal params mean "the same command"),
        ``samples`` (list of dicts: name, path, label, ids, split, and where the reader
        gives one ``source``, the task of :func:`ikem_data.gendata.workers.load_sample`),
        ``skipped`` (names left out by the ignore list), ``failed`` (inputs wrong on
        their own, recorded with ``on_error="skip"``: ``{"file", "reason"}``), ``notes``
        and ``format`` (the registry entry).

    Raises:
        GendataError: an unknown format or option, or a bad input (missing/empty folder,
            a file name that is not a valid sample name, an entry that is not a regular
            file, a bad labels table, a pickle that is not pyskl's, a missing PKU-MMD
            split file, ...); with ``on_error="stop"`` also the first input that is wrong
            on its own.
    """
    try:
        fmt = get_format(input_format)
    except ValueError as exc:
        raise GendataError(str(exc)) from None
    if on_error not in ON_ERROR:
        raise GendataError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    if body_policy not in ("listed", "tracked"):
        raise GendataError(f"--bodies must be listed or tracked, not {body_policy!r}")
    if max_bodies is None:
        max_bodies = fmt.max_bodies
    if int(chunk_size) < 1 or int(max_bodies) < 1:
        raise GendataError("chunk size and max bodies must be positive")
    if raw is None and "labels" not in fmt.options:
        raise GendataError(f"--raw is required for --input-format {fmt.name}: {fmt.raw}")
    if labels is not None and "labels" not in fmt.options:
        takes = [f.name for f in FORMATS.values() if "labels" in f.options]
        raise GendataError(f"--labels applies to --input-format {' or '.join(takes)} only")
    if body_policy != "listed" and fmt.bodies is not None:
        raise GendataError(f"--bodies applies to NTU .skeleton input; {fmt.name} input comes with its bodies "
                           f"already chosen ({fmt.bodies})")
    if dataset is not None and dataset not in fmt.datasets:
        raise GendataError(f"--dataset for --input-format {fmt.name} is {' or '.join(fmt.datasets)}, not {dataset}")
    options = {"labels": labels} if "labels" in fmt.options else {}
    try:
        ignored = frozenset(ntu.read_ignore_list(ignore_list)) if ignore_list is not None else None
        found = fmt.module().plan_samples(raw, dataset, ignored, **options)
    except GendataError:
        raise
    except (OSError, ValueError) as exc:
        raise GendataError(str(exc)) from None
    samples, failed, skipped = found["samples"], found["failed"], found["skipped"]
    if failed and on_error == "stop":
        raise GendataError(f"{failed[0]['reason']} (nothing was written: fix the input and rerun, or rerun with "
                           f"--on-error skip to leave it out)")
    if not samples:
        first = f"; first failure: {failed[0]['reason']}" if failed else ""
        raise GendataError(f"no samples left in {raw} ({len(skipped)} ignored, {len(failed)} failed){first}")
    identity = dict(raw=str(Path(raw).resolve()) if raw is not None else None, labels=None,
                    body_policy=fmt.bodies or body_policy,
                    ignore_list=str(Path(ignore_list).resolve()) if ignore_list is not None else None)
    identity.update(found.get("params", {}))
    own = {k: v for k, v in identity.items() if k not in ("raw", "labels", "body_policy", "ignore_list")}
    params = dict(
        input_format=fmt.name, dataset=found["dataset"], raw=identity["raw"], labels=identity["labels"],
        body_policy=identity["body_policy"], max_bodies=int(max_bodies), ignore_list=identity["ignore_list"],
        on_error=on_error, chunk_size=int(chunk_size), **own,
        n_inputs=len(samples), inputs_sha1=fingerprint(samples), files_sha1=files_fingerprint(samples, raw),
    )
    return dict(params=params, samples=samples, skipped=skipped, failed=failed, notes=found.get("notes", []),
                format=fmt)
