"""Kinect v2 CSV input (the KinectReader format of microsoft/LabanotationSuite).

One frame per line: a timestamp in 100-ns ticks, then 25 x (x, y, z, trackingState),
comma-separated, camera-space metres, joints in the NTU order (a trailing comma is
allowed). One body per frame. Dropped frames are simply absent (the timestamps jump).

Labels come from a small CSV with a header row ``file,label[,split]``: ``file`` is a
path relative to the labels file's folder (or to the raw folder), ``label`` a 0-based
int class, ``split`` optionally ``train`` or ``val``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

NUM_JOINTS = 25
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
    text = Path(path).read_bytes().decode("ascii", "replace")
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
        KinectFormatError: a line without 101 fields or with a non-numeric field
            (file, line, field), or a file without any frame.
    """
    frames, states, stamps = [], [], []
    for number, fields in _rows(path):
        if len(fields) != FIELDS:
            raise KinectFormatError(path, number, f"expected {FIELDS} comma-separated fields "
                                                  f"(timestamp + 25 x (x, y, z, state)), found {len(fields)}")
        try:
            values = np.array([float(f) for f in fields[1:]], dtype=np.float64).reshape(NUM_JOINTS, 4)
            stamp = int(fields[0])
        except ValueError:
            bad = next(k for k, f in enumerate(fields, 1) if not _is_number(f))
            raise KinectFormatError(path, number, f"field {bad} ({fields[bad - 1].strip()[:20]!r}) is not a number") from None
        frames.append(values[:, :3])
        states.append(values[:, 3])
        stamps.append(stamp)
    if not frames:
        raise KinectFormatError(path, 0, "no frames in file")
    xyz = np.stack(frames).transpose(2, 0, 1).astype(np.float32)
    tracking = np.stack(states).astype(np.int8)
    if return_timestamps:
        return xyz, tracking, np.asarray(stamps, dtype=np.int64)
    return xyz, tracking


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def count_frames(path) -> int:
    """Number of non-blank lines (frames) of a capture, without parsing them."""
    return sum(1 for line in Path(path).read_bytes().splitlines() if line.strip())


class LabelRow(NamedTuple):
    """One row of a labels CSV."""

    file: str
    path: Path
    label: int
    split: str | None


def read_labels_csv(path, raw=None) -> list[LabelRow]:
    """Read a ``file,label[,split]`` table (header row required).

    Args:
        path: the labels CSV.
        raw: optional folder; a file not found beside the labels file is looked up there.

    Returns:
        rows in file order.

    Raises:
        FileNotFoundError: the labels file, or a file it names, does not exist.
        KinectFormatError: a missing ``file``/``label`` column, a label that is not a
            non-negative int, a split other than train/val, or a file listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise KinectFormatError(path, 1, "empty labels file; expected a header row file,label[,split]")
        header = [h.strip().lower() for h in header]
        if "file" not in header or "label" not in header:
            raise KinectFormatError(path, 1, f"header must name the columns file,label[,split]; found {','.join(header)}")
        col = {name: header.index(name) for name in header}
        rows, seen = [], set()
        for number, fields in enumerate(reader, 2):
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
            if name in seen:
                raise KinectFormatError(path, number, f"file {name!r} is listed twice")
            seen.add(name)
            candidates = [path.parent / name] + ([Path(raw) / name, Path(raw) / Path(name).name] if raw else [])
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"{path}:{number}: capture {name!r} not found "
                                        f"(looked in {', '.join(str(c.parent) for c in candidates)})")
            rows.append(LabelRow(name, found, label, split))
    if not rows:
        raise KinectFormatError(path, 0, "no samples listed")
    return rows
