"""PKU-MMD phase I and II: long Kinect v2 videos cut into their labelled action segments.

Folder layout read (the one MAMP's ``data/pku_v1|pku_v2/pku_gendata.py`` expects)::

    RAW/skeleton/<video>.txt   one row per frame: 150 numbers = 2 bodies x 25 joints x
                               (x, y, z), camera-space metres, Kinect v2 joint order (as NTU);
                               a missing body is written as 75 zeros
    RAW/label/<video>.txt      one row per action instance: label,start,end,confidence
                               (label 1..51; confidence 1 or 2, not used)
    RAW/cross_subject.txt, RAW/cross_view.txt          phase I (also cross-subject.txt,
                                                       cross-view.txt, as some copies name them)
    RAW/cross_subject_v2.txt, RAW/cross_view_v2.txt    phase II

A split file has four lines: a title (``Training videos:``), the training videos
(comma-separated names without ``.txt``), a title (``Validataion videos:``, sic) and the
validation videos. Video names look like ``0002-L`` (phase I) or ``A10N08-L`` (the form
of the phase II files seen); the letter after the last ``-`` is the view, L, M or R,
stored as camera 1, 2, 3 (other ids are not in the name: -1).

Frames: the dataset's documentation says only "start_frame, end_frame". ikem reads a
segment as rows ``start .. end - 1`` of the skeleton file (0-based row index, end
excluded), which is exactly MAMP's ``seq_data[start:end]`` and the interval length
``end - start`` of PKU-MMD's own evaluation script; reading the numbers as 1-based and
inclusive would shift a segment by one frame. Each segment becomes one sample named
``<video>_<k>`` (k: 0-based row of the label file, as MAMP), never truncated (MAMP cuts
at 300 frames), label stored 0-based.

A video's rows are parsed once per worker however many of its segments the worker
handles (:func:`read_video` keeps the last video; gendata hands a worker all segments
of one video together).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ikem_data.layouts import KINECT_V2_25, get_layout
from ikem_data.names import BENCHMARKS as _ALL_BENCHMARKS
from ikem_data.files import read_regular_file

DATASETS = ("pku1", "pku2")
BENCHMARKS = tuple(b for b in _ALL_BENCHMARKS if b.startswith("pku"))
NUM_CLASSES = 51
NUM_JOINTS = get_layout(KINECT_V2_25).num_joints  # 25: PKU-MMD records Kinect v2 joints
ROW_NUMBERS = 2 * NUM_JOINTS * 3  # 150: 2 bodies x 25 joints x 3
#: Split files per phase and benchmark, in order of preference.
SPLIT_FILES = {
    "pku1": {"xsub": ("cross_subject.txt", "cross-subject.txt"), "xview": ("cross_view.txt", "cross-view.txt")},
    "pku2": {"xsub": ("cross_subject_v2.txt",), "xview": ("cross_view_v2.txt",)},
}
VIEWS = {"L": 1, "M": 2, "R": 3}
VIDEO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_F32_MAX = float(np.finfo(np.float32).max)
#: How a label row's frames are read (recorded in the store's gendata params).
SEGMENT_FRAMES = "rows start..end-1 of the skeleton file (0-based, end excluded), as MAMP"
#: This process's last video: ((path, size, mtime, inode), rows).
_LAST = [None, None]


class PkuError(ValueError):
    """PKU-MMD input that cannot be used; the message names the file (and line)."""


def _split_path(raw, dataset, benchmark):
    for name in SPLIT_FILES[dataset][benchmark]:
        if (raw / name).is_file():
            return raw / name
    names = " or ".join(SPLIT_FILES[dataset][benchmark])
    raise PkuError(f"no split file {names} in {raw}: PKU-MMD's Split folder has it; put it beside skeleton/ "
                   f"and label/")


def infer_dataset(raw) -> str:
    """``"pku1"`` or ``"pku2"`` from the split files in ``raw`` (exactly one phase's must be there).

    Raises:
        PkuError: both phases' files or neither.
    """
    raw = Path(raw)
    found = [d for d in DATASETS if any((raw / n).is_file() for n in SPLIT_FILES[d]["xsub"])]
    if len(found) != 1:
        raise PkuError(f"cannot tell PKU-MMD phase I from II in {raw} ({'both' if found else 'neither'} "
                       f"cross_subject.txt and cross_subject_v2.txt found): pass --dataset pku1 or pku2")
    return found[0]


def read_split_file(path):
    """``(train videos, val videos)`` of a split file (line 2 and line 4).

    Raises:
        PkuError: fewer than 4 lines, a title line that does not say train/validation,
            a name that is not a valid video name, or a video in both parts.
    """
    path = Path(path)
    try:
        lines = read_regular_file(path, "split file").decode("ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise PkuError(f"{path}: not ASCII text (byte {exc.start})") from None
    if len(lines) < 4:
        raise PkuError(f"{path}: {len(lines)} lines; expected 4 (title, training videos, title, validation videos)")
    for number, word in ((1, "train"), (3, "val")):
        if word not in lines[number - 1].lower():
            raise PkuError(f"{path}:{number}: expected a title line mentioning '{word}', found {lines[number - 1]!r}")
    parts = []
    for number in (2, 4):
        names = [n.strip() for n in lines[number - 1].split(",")]
        names = [n[:-4] if n.endswith(".txt") else n for n in names if n]
        for name in names:
            if not VIDEO_RE.match(name):
                raise PkuError(f"{path}:{number}: {name!r} is not a video name")
        parts.append(names)
    both = set(parts[0]) & set(parts[1])
    if both:
        raise PkuError(f"{path}: video {sorted(both)[0]} is listed as training (line 2) and validation (line 4)")
    return parts[0], parts[1]


def _int(field, what):
    if not _INT_RE.match(field):
        raise ValueError(f"{what} {field!r} is not an integer")
    return int(field)


def read_labels(path):
    """The action instances of one label file, one entry per non-blank row.

    Returns:
        list of ``(k, line, label (1-based), start, end, error)``: ``k`` the 0-based row
        among non-blank rows (the segment index), ``line`` the 1-based file line; for a
        bad row label/start/end are None and ``error`` says why (naming file and line).

    Raises:
        PkuError: not ASCII text. OSError: unreadable or not a regular file.
    """
    try:
        text = read_regular_file(path, "label file").decode("ascii")
    except UnicodeDecodeError as exc:
        raise PkuError(f"{path}: not ASCII text (byte {exc.start})") from None
    rows, k = [], 0
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        fields = [f.strip() for f in content.split(",")]
        try:
            if len(fields) != 4:
                raise ValueError(f"{len(fields)} fields; expected 4: label,start,end,confidence")
            label = _int(fields[0], "label")
            start, end = _int(fields[1], "start"), _int(fields[2], "end")
            float(fields[3])  # the confidence: a number, otherwise unused
            if not 1 <= label <= NUM_CLASSES:
                raise ValueError(f"label {label} is outside 1..{NUM_CLASSES}")
            if start < 0:
                raise ValueError(f"start frame {start} is negative")
            if end <= start:
                raise ValueError(f"the segment ends (frame {end}) before it starts (frame {start})" if end < start
                                 else f"the segment is empty: start = end = {start} (the end frame is excluded)")
            rows.append((k, line, label, start, end, None))
        except ValueError as exc:
            rows.append((k, line, None, None, None, f"{path}:{line}: {exc}"))
        k += 1
    return rows


def list_videos(folder) -> list[Path]:
    """The ``<video>.txt`` files of ``folder``, sorted by name.

    Raises:
        FileNotFoundError: no such folder. PkuError: no ``.txt`` file, a name that is
            not ASCII letters, digits, ``-``, ``_``, ``.``, or an entry that is not a
            regular file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"PKU-MMD skeleton folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".txt"))
    if not files:
        raise PkuError(f"no .txt skeleton files in {folder}")
    for path in files:
        if not VIDEO_RE.match(path.stem):
            raise PkuError(f"{path}: the video name {path.stem!r} must be ASCII letters, digits, '-', '_' or '.'")
        if not path.is_file():
            raise PkuError(f"{path} is not a regular file; only regular files are read")
    return files


def plan_samples(raw, dataset=None, ignored=frozenset()):
    """One sample per labelled segment, ordered by video then label row.

    Args:
        raw: the folder with ``skeleton/``, ``label/`` and the split files.
        dataset: ``"pku1"`` or ``"pku2"``; ``None``: :func:`infer_dataset`.
        ignored: video or sample (``<video>_<k>``) names to leave out.

    Returns:
        dict with ``dataset``, ``samples`` (dicts: ``name``, ``path`` (label file and
        line, for messages), ``label`` (0-based), ``ids`` (camera from the view, others
        -1), ``split``, ``extra`` (``start:end``), ``source`` (the task of
        :func:`load_segment`)), ``skipped``, ``failed`` (dicts ``file``, ``reason``: bad
        label rows, videos without labels or outside a split), ``split_files`` and ``notes``
        (the videos the split files list that the folder lacks: a partial copy is
        usable, and says so).

    Raises:
        PkuError, FileNotFoundError: a missing folder or split file, a malformed split file.
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"PKU-MMD folder {raw} does not exist")
    ignored = ignored or frozenset()
    if dataset is None:
        dataset = infer_dataset(raw)
    if dataset not in DATASETS:
        raise PkuError(f"--dataset must be pku1 or pku2 for PKU-MMD input, not {dataset!r}")
    videos = list_videos(raw / "skeleton")
    names = {p.stem for p in videos}
    membership, failed, split_files, absent = {}, [], [], set()
    for benchmark in ("xsub", "xview"):
        path = _split_path(raw, dataset, benchmark)
        split_files.append(path.name)
        for part, listed, line in zip(("train", "val"), read_split_file(path), (2, 4)):
            for video in listed:
                if video not in names:  # a partial copy: the split files list every video of the phase
                    absent.add(video)
                membership.setdefault(video, {})[f"{dataset}-{benchmark}"] = part
    notes = []
    if absent:
        first = ", ".join(sorted(absent)[:3])
        notes.append(f"{len(absent)} videos that {' and '.join(split_files)} list have no skeleton file in "
                     f"{raw / 'skeleton'} and are not in the store (a partial copy of PKU-MMD?), e.g. {first}")
    samples, skipped = [], []
    for skeleton in videos:
        video = skeleton.stem
        if video in ignored:
            skipped.append(video)
            continue
        label_path = raw / "label" / skeleton.name
        parts = membership.get(video, {})
        missing = [f for f, b in zip(split_files, ("xsub", "xview")) if f"{dataset}-{b}" not in parts]
        if missing:
            failed.append(dict(file=str(skeleton), reason=f"{skeleton}: video {video} is in neither part of "
                                                          f"{missing[0]}"))
            continue
        if not label_path.is_file():
            failed.append(dict(file=str(skeleton), reason=f"{skeleton}: no label file {label_path}"))
            continue
        camera = VIEWS.get(video.rsplit("-", 1)[-1], -1) if "-" in video else -1
        for k, line, label, start, end, error in read_labels(label_path):
            name = f"{video}_{k}"
            where = f"{label_path}:{line} (segment {name})"
            if name in ignored:
                skipped.append(name)
            elif error is not None:
                failed.append(dict(file=where, reason=error))
            else:
                split = ",".join(f"{b}/{p}" for b, p in sorted(parts.items()))
                samples.append(dict(name=name, path=where, label=label - 1, split=split,
                                    ids=(-1, camera, -1, -1), extra=f"{start}:{end}",
                                    source=(where, str(skeleton), start, end)))
    return dict(dataset=dataset, samples=samples, skipped=skipped, failed=failed, split_files=split_files, notes=notes,
                params=dict(split_files=split_files, segment_frames=SEGMENT_FRAMES))


# -- the skeleton rows -------------------------------------------------------------------

def _content_lines(data):
    """The file's lines, without trailing blank lines (blank lines elsewhere are errors)."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _first_problem(path, lines):
    """The first line that is not 150 finite float32 numbers, as a message (slow, exact)."""
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            return f"{path}:{number}: empty line; every line is one frame of {ROW_NUMBERS} numbers"
        if len(fields) != ROW_NUMBERS:
            return (f"{path}:{number}: {len(fields)} numbers; expected {ROW_NUMBERS} "
                    f"(2 bodies x 25 joints x 3 coordinates)")
        for index, field in enumerate(fields, 1):
            shown = field[:20].decode("ascii", "replace")
            try:
                if b"_" in field:  # float() takes 1_000; a data file never means it
                    raise ValueError
                value = float(field)
            except ValueError:
                return f"{path}:{number}: field {index} ({shown!r}) is not a number"
            if not np.isfinite(value) or abs(value) > _F32_MAX:
                return f"{path}:{number}: field {index} ({shown!r}) is not a finite float32"
    return None


def read_video(path):
    """All rows of a skeleton file: (T, 150) float32 metres (T may be 0).

    The last video read is kept: asking again for an unchanged file costs a ``stat``.

    Raises:
        PkuError: a line that is not 150 numbers, a value that is not a finite float32,
            a blank line before the end (the message names file and line).
        OSError: unreadable, not a regular file.
    """
    info = os.stat(path)
    key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
    if _LAST[0] != key:
        try:
            _LAST[:] = [key, _parse_video(path, read_regular_file(path, "skeleton file"))]
        except PkuError as exc:  # kept too: every segment of a bad video fails the same way
            _LAST[:] = [key, PkuError(str(exc))]  # the message, without the traceback's frames
    if isinstance(_LAST[1], PkuError):
        raise PkuError(str(_LAST[1]))
    return _LAST[1]


def _parse_video(path, data):
    lines = _content_lines(data)
    if not lines:
        return np.zeros((0, ROW_NUMBERS), np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = np.loadtxt(io.BytesIO(data), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        rows = None
    # loadtxt skips blank lines and accepts nan/inf; the exact check names the line.
    if rows is None or rows.shape != (len(lines), ROW_NUMBERS) \
            or not (np.isfinite(rows).all() and np.abs(rows).max(initial=0) <= _F32_MAX):
        raise PkuError(_first_problem(path, lines) or f"{path}: not a table of {ROW_NUMBERS} numbers per line")
    return rows.astype(np.float32)


def load_segment(source, max_bodies, frames_only=False):
    """Rows ``start .. end - 1`` of a video as one sample.

    Args:
        source: ``(where, skeleton path, start, end)`` from :func:`plan_samples`.
        max_bodies: slots M of the store (the file has 2; slots beyond stay zero).
        frames_only: check only and return the frame count.

    Returns:
        ``("ok", xyz (3, T, 25, max_bodies) float32 metres, T, bodies with a non-zero
        value)``, T = end - start; or ``("ok", T)`` with ``frames_only``.

    Raises:
        PkuError: the segment passes the video's end, or holds no body at all; a
            malformed skeleton file (see :func:`read_video`).
    """
    where, path, start, end = source
    rows = read_video(path)
    if end > rows.shape[0]:
        raise PkuError(f"{where}: the segment ends at frame {end} (excluded), past the end of {path} "
                       f"({rows.shape[0]} frames)")
    segment = rows[start:end].reshape(end - start, 2, NUM_JOINTS, 3)  # (T, body, joint, xyz)
    present = segment.reshape(end - start, 2, -1).any(axis=(0, 2))
    if not present.any():
        raise PkuError(f"{where}: frames {start}..{end - 1} of {path} hold no body (all zeros); MAMP drops such "
                       f"segments: rerun with --on-error skip to leave it out")
    if frames_only:
        return ("ok", end - start)
    xyz = np.zeros((3, end - start, NUM_JOINTS, max_bodies), dtype=np.float32)
    k = min(2, max_bodies)
    xyz[..., :k] = segment[:, :k].transpose(3, 0, 2, 1)  # -> (C, T, V, M)
    return ("ok", xyz, end - start, int(np.count_nonzero(present)))


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """:func:`load_segment` as the reader of ``--input-format pku-mmd`` (the bodies are as recorded)."""
    return load_segment(source, max_bodies, frames_only)


def group_key(source):
    """The video of a segment: a worker gets all segments of one video together (parsed once)."""
    return source[1]
