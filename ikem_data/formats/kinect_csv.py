"""Kinect v2 CSV input (the KinectReader format of microsoft/LabanotationSuite).

One frame per line: a timestamp in 100-ns ticks, then 25 x (x, y, z, trackingState),
comma-separated, camera-space metres, joints in the NTU order (a trailing comma is
allowed). One body per frame. Dropped frames are simply absent (the timestamps jump).

Values are checked as they are read: x, y, z must be finite float32 numbers (``nan``,
``inf`` and ``1e400`` are refused, never stored), the tracking state 0, 1 or 2 and the
timestamp an int64; each violation names the file, line and field.

Labels come from a small CSV with a header row ``file,label[,split]``, UTF-8 (a byte
order mark is allowed): ``file`` is a path relative to the labels file's folder (or to
the raw folder), ``label`` a 0-based int class, ``split`` optionally ``train`` or
``val`` (without a split column the store gets no benchmark, which training needs).
``file`` becomes the sample name, and the store keeps names as ASCII, so a non-ASCII
file name is refused up front with its line (rename the file). A capture listed twice,
even written differently (``clips/a.csv`` and ``./clips/a.csv``, or a link to it), is
refused: it would land in train and val at once.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ikem_data.layouts import KINECT_V2_25, get_layout

NUM_JOINTS = get_layout(KINECT_V2_25).num_joints  # 25
FIELDS = 1 + 4 * NUM_JOINTS


class KinectFormatError(ValueError):
    """A malformed Kinect CSV or labels file; the message names the file and 1-based line."""

    def __init__(self, path, line, reason):
        self.path, self.line, self.reason = str(path), int(line), reason
        super().__init__(f"{self.path}:{self.line}: {reason}" if self.line else f"{self.path}: {reason}")

    def __reduce__(self):
        return (KinectFormatError, (self.path, self.line, self.reason))


def _rows(path):
    """(1-based line number, fields) of the non-blank lines, trailing empty field dropped."""
    from ikem_data.files import read_regular_file

    text = read_regular_file(path).decode("ascii", "replace")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(",")
        if fields and fields[-1].strip() == "":
            fields = fields[:-1]
        yield number, fields


def read_kinect_csv(path, return_timestamps=False):
    """Read one KinectReader CSV capture.

    Args:
        path: the CSV file.
        return_timestamps: also return the (T,) int64 timestamps (100-ns ticks).

    Returns:
        ``(xyz, tracking)``: xyz (3, T, 25) float32 camera-space metres and tracking
        (T, 25) int8 joint tracking states (0 not tracked, 1 inferred, 2 tracked);
        plus the timestamps when asked.

    Raises:
        KinectFormatError: a line without 101 fields, a field that is not a number, an
            x, y or z that is not a finite float32 (NaN, inf, overflow), a tracking state
            other than 0, 1, 2, a timestamp beyond int64 (file, line, field), or a file
            without any frame.
        OSError: unreadable, or not a regular file.
    """
    frames, states, stamps, lines = [], [], [], []
    for number, fields in _rows(path):
        if len(fields) != FIELDS:
            raise KinectFormatError(path, number, f"expected {FIELDS} comma-separated fields "
                                                  f"(timestamp + 25 x (x, y, z, state)), found {len(fields)}")
        try:
            values = np.array([float(f) for f in fields[1:]], dtype=np.float64).reshape(NUM_JOINTS, 4)
            stamp = int(fields[0])
        except ValueError:
            bad = next(k for k, f in enumerate(fields, 1) if not _is_number(f) or (k == 1 and not _is_int(f)))
            raise KinectFormatError(path, number, f"field {bad} ({fields[bad - 1].strip()[:20]!r}) is not a number") from None
        if not -2**63 <= stamp < 2**63:
            raise KinectFormatError(path, number, f"field 1 (timestamp {stamp}) is out of the int64 range")
        frames.append(values[:, :3])
        states.append(values[:, 3])
        stamps.append(stamp)
        lines.append(number)
    if not frames:
        raise KinectFormatError(path, 0, "no frames in file")
    exact = np.stack(frames)  # (T, 25, 3) float64
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        xyz = exact.astype(np.float32)
    state = np.stack(states)  # (T, 25) float64
    bad_xyz = ~np.isfinite(xyz)  # NaN, inf, and values beyond float32
    if bad_xyz.any():
        t, joint, axis = np.argwhere(bad_xyz)[0]
        raise KinectFormatError(path, lines[t], f"field {2 + 4 * joint + axis} ({'xyz'[axis]} of joint {joint + 1}, "
                                                f"{float(exact[t, joint, axis]):g}) is not a finite float32 number")
    bad_state = ~np.isin(state, (0.0, 1.0, 2.0))
    if bad_state.any():
        t, joint = np.argwhere(bad_state)[0]
        raise KinectFormatError(path, lines[t], f"field {5 + 4 * joint} (tracking state of joint {joint + 1}) is "
                                                f"{float(state[t, joint]):g}; expected 0, 1 or 2")
    xyz = xyz.transpose(2, 0, 1).copy()
    tracking = state.astype(np.int8)
    if return_timestamps:
        return xyz, tracking, np.asarray(stamps, dtype=np.int64)
    return xyz, tracking


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def count_frames(path) -> int:
    """Number of non-blank lines (frames) of a capture, without parsing them.

    Raises:
        OSError: unreadable, or not a regular file.
    """
    from ikem_data.files import read_regular_file

    return sum(1 for line in read_regular_file(path).splitlines() if line.strip())


class LabelRow(NamedTuple):
    """One row of a labels CSV."""

    file: str
    path: Path
    label: int
    split: str | None


def _decode_table(path, data):
    """The text of a labels table: UTF-8, with or without a byte order mark."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise KinectFormatError(path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                                            f"save the table as UTF-8") from None


def _find_capture(path, number, name, raw):
    """The capture a row names: beside the labels file, else in ``raw`` (by path, then by file name)."""
    candidates = [path.parent / name] + ([Path(raw) / name, Path(raw) / Path(name).name] if raw else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.exists():  # a FIFO would block the reader forever; a folder is no capture
            raise KinectFormatError(path, number, f"capture {name!r} ({candidate}) is not a regular file")
    raise FileNotFoundError(f"{path}:{number}: capture {name!r} not found "
                            f"(looked in {', '.join(str(c.parent) for c in candidates)})")


def read_labels_csv(path, raw=None) -> list[LabelRow]:
    """Read a ``file,label[,split]`` table (header row required, UTF-8).

    Args:
        path: the labels CSV.
        raw: optional folder; a file not found beside the labels file is looked up there.

    Returns:
        rows in file order.

    Raises:
        FileNotFoundError: the labels file, or a file it names, does not exist.
        KinectFormatError: text that is not UTF-8, a missing ``file``/``label`` column,
            a label that is not a non-negative int, a split other than train/val, a file
            name that is not ASCII, or a capture listed twice (by name, or the same file
            under two spellings or links); the message names the table and line.
    """
    from ikem_data.files import read_regular_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels file {path} does not exist")
    try:
        text = _decode_table(path, read_regular_file(path, "the labels file"))
    except OSError as exc:
        raise KinectFormatError(path, 0, str(exc).removeprefix(f"{path}: ")) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise KinectFormatError(path, 1, "empty labels file; expected a header row file,label[,split]")
    header = [h.strip().lower() for h in header]
    if "file" not in header or "label" not in header:
        raise KinectFormatError(path, 1, f"header must name the columns file,label[,split]; found {','.join(header)}")
    col = {name: header.index(name) for name in header}
    rows, seen, same = [], set(), {}
    for fields in reader:
        number = reader.line_num  # the row's last line (a quoted field may span lines)
        if not any(f.strip() for f in fields):
            continue
        if len(fields) < len(header):
            raise KinectFormatError(path, number, f"expected {len(header)} fields, found {len(fields)}")
        name = fields[col["file"]].strip()
        try:
            label = int(fields[col["label"]])
        except ValueError:
            label = -1
        if label < 0 or label > 32767:
            raise KinectFormatError(path, number, f"label {fields[col['label']]!r} is not a 0-based int class")
        split = fields[col["split"]].strip().lower() if "split" in col else None
        if split is not None and split not in ("train", "val"):
            raise KinectFormatError(path, number, f"split {split!r} must be train or val")
        if not name.isascii():  # raw/name holds ASCII (ikem_data.store); refuse before anything is written
            raise KinectFormatError(path, number, f"file name {name!r} is not ASCII; sample names are stored as "
                                                  f"ASCII: rename the file and its row")
        if name in seen:
            raise KinectFormatError(path, number, f"file {name!r} is listed twice")
        seen.add(name)
        found = _find_capture(path, number, name, raw)
        info = os.stat(found)
        # One file, however its path is written; a file system without inode numbers
        # (st_ino 0) falls back to the resolved path.
        key = (info.st_dev, info.st_ino) if info.st_ino else str(found.resolve())
        if key in same:
            first_line, first_name = same[key]
            raise KinectFormatError(path, number, f"file {name!r} is the same file as {first_name!r} on line "
                                                  f"{first_line}; list each capture once")
        same[key] = (number, name)
        rows.append(LabelRow(name, found, label, split))
    if not rows:
        raise KinectFormatError(path, 0, "no samples listed")
    return rows


# -- the reader of --input-format kinect-csv (ikem_data.formats.registry) ------------------

def plan_samples(raw, dataset=None, ignored=None, labels=None):
    """The captures a ``file,label[,split]`` table lists, in its order.

    ``ignored`` does not apply (the table chooses the captures); with a split column the
    store gets the benchmark ``custom`` (:func:`store_splits`).

    Raises:
        ValueError: no ``labels`` table, a ``raw`` that is not a folder, a bad table
            (:func:`read_labels_csv`). FileNotFoundError: a missing file.
    """
    if labels is None:
        raise ValueError("--labels FILE (a file,label[,split] CSV) is required for --input-format kinect-csv")
    if raw is not None and not Path(raw).is_dir():
        raise ValueError(f"raw folder {raw} does not exist")
    samples = [dict(name=row.file, path=str(row.path), label=row.label, split=row.split, ids=(-1, -1, -1, -1))
               for row in read_labels_csv(labels, raw)]
    return dict(dataset="kinect", samples=samples, skipped=[], failed=[],
                params=dict(labels=str(Path(labels).resolve()), ignore_list=None))


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """One capture: ``("ok", xyz (3, T, 25, M) float32, T, 1)`` (the body in slot 0), or ``("ok", T)``."""
    joints, _ = read_kinect_csv(source)
    if frames_only:
        return ("ok", int(joints.shape[1]))
    xyz = np.zeros(joints.shape + (max_bodies,), dtype=np.float32)
    xyz[..., 0] = joints
    return ("ok", xyz, int(joints.shape[1]), 1)


def store_splits(names, samples, params):
    """``({"custom": {part: indices}}, [])`` from the table's split column, or no benchmark and a note."""
    by_name = {s["name"]: s["split"] for s in samples}
    if not any(by_name[name] is not None for name in names):
        return {}, [f"the labels table {params['labels']} has no split column, so the store has no "
                    f"benchmark (splits/) and training needs one: add a split column (train or val on "
                    f"every row) and rerun gendata with --overwrite"]
    parts = {"train": [], "val": []}
    for index, name in enumerate(names):
        if by_name[name] is not None:
            parts[by_name[name]].append(index)
    return {"custom": {part: np.asarray(v, dtype=np.int64) for part, v in parts.items()}}, []
