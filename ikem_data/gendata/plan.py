"""The inputs of a ``gendata`` run (step 1 of :mod:`ikem_data.gendata.run`): :func:`plan`
lists them per input format and resolves the parameters that identify the store.

NTU ``.skeleton`` files are listed here, sorted by name, minus the ignore list; the files
of a Kinect labels CSV too; a pyskl pickle is loaded once (:mod:`ikem_data.formats.pyskl`, by a
restricted unpickler) and PKU-MMD segments are listed by :mod:`ikem_data.formats.pku`.
:func:`fingerprint` (names, labels and splits, in order) is how a run recognises the
same inputs again: the whole list (``inputs_sha1``) and the files already done
(``done_sha1``, see :mod:`ikem_data.gendata.write`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ikem_data.formats import ntu
from ikem_data.gendata.errors import GendataError

INPUT_FORMATS = ("ntu", "kinect-csv", "pyskl", "pku-mmd")
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


def plan(raw=None, *, input_format="ntu", dataset=None, labels=None, body_policy="listed", max_bodies=2,
         ignore_list=None, on_error="stop", chunk_size=16):
    """Resolve the inputs and the parameters that identify a store.

    Args:
        raw: NTU or Kinect folder, pyskl ``.pkl`` file, or PKU-MMD folder.
        input_format, dataset, labels, body_policy, max_bodies, ignore_list, on_error,
            chunk_size: as :func:`ikem_data.gendata.run.gendata`.

    Returns:
        dict with ``params`` (JSON-able; equal params mean "the same command"),
        ``samples`` (list of dicts: name, path, label, ids, split, and for pyskl and
        PKU-MMD ``source``, the task of :func:`ikem_data.gendata.workers.load_sample`),
        ``skipped`` (names left out by the ignore list), ``failed`` (inputs wrong on
        their own, recorded with ``on_error="skip"``: ``{"file", "reason"}``) and ``notes``.

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
            from ikem_data.formats.kinect_csv import read_labels_csv

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
        n_inputs=len(samples), inputs_sha1=fingerprint(samples),
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
            from ikem_data.formats import pyskl

            if dataset not in (None,) + ntu.DATASETS:
                raise GendataError(f"--dataset for a pyskl pickle is ntu60 or ntu120, not {dataset}")
            if not Path(raw).is_file():
                raise GendataError(f"pyskl pickle {raw} does not exist or is not a file")
            found = pyskl.plan_samples(raw, dataset, ignored)
            extra = {}
        else:
            from ikem_data.formats import pku

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
        n_inputs=len(samples), inputs_sha1=fingerprint(samples),
    )
    return dict(params=params, samples=samples, skipped=found["skipped"], failed=failed,
                notes=found.get("notes", []))
