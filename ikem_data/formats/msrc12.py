"""MSRC-12 Kinect gesture dataset (Fothergill et al., CHI 2012): sequences cut into gesture instances.

Each sequence is a pair of files named ``P<a>_<b>_<g>[A]_p<NN>``:

- ``.csv``: one frame per line, whitespace-separated: ``t_usec`` then 20 x (x, y, z, w),
  Kinect v1 joints in the SDK 1.x order (:data:`ikem_data.layouts.KINECT_V1_20`),
  camera-space metres (w, the tracking flag, is not stored). Leading rows of zeros mean no
  body was tracked yet and are dropped (later all-zero rows are kept as recorded).
- ``.tagstream``: the header ``XQPCTick;Tag`` then one ``tick;G<k> <name>`` line per
  *action point*, the moment one instance of gesture k (1..12) completes. The dataset gives
  no start or end. Ticks convert to the CSV's microseconds by the dataset's own
  ``load_tagstream.m``, ``(tick * 1000 + 49875 / 2) / 49875``, taken here as its integer
  intent ``(tick * 2000 + 49875) // 99750`` (at most 1 us from MATLAB's uint64 rounding).

Window rule (ikem's, recorded in the store's params as :data:`WINDOW_RULE`): instance k
takes the frames whose time lies after the midpoint of action points k-1 and k and up to
the midpoint of action points k and k+1; the first instance starts at the first tracked
frame, the last ends with the file. The instances thus tile the tracked sequence, each
holds its own action point and the movement on both sides of it, and none overlaps
another (so no frame is in two samples). Each instance is a sample ``<sequence>_<k>``
(k 1-based, in tagstream order), label ``g - 1``.

Ids stored: (setup = a, camera -1, subject = person NN, replication = b). Benchmark
``msrc12-xsub`` is ikem's (the dataset defines no subject split): odd persons train, even
persons val.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ikem_data.files import read_regular_file
from ikem_data.formats.folder import InputFileError, as_sample, checked_float32, list_named
from ikem_data.layouts import KINECT_V1_20, get_layout

NAME_RE = re.compile(r"P(\d+)_(\d+)_(\d+)(A?)_p(\d+)\.csv")
NUM_CLASSES = 12
NUM_JOINTS = get_layout(KINECT_V1_20).num_joints  # 20
FIELDS = 1 + 4 * NUM_JOINTS
TAG_RE = re.compile(r"(\d+);G(\d+)\b.*")
WINDOW_RULE = ("instance k: frames after the midpoint of action points k-1 and k, up to the midpoint of "
               "action points k and k+1 (first: from the first tracked frame; last: to the end); "
               "ticks to usec as load_tagstream.m")
#: This process's last sequence: (file identities, (joints, action points, windows)), so a
#: worker that gets all instances of one sequence parses its CSV and tagstream once.
_LAST = [None, None]


def tick_to_usec(tick: int) -> int:
    """A tagstream tick in the CSV's microseconds (``load_tagstream.m``, rounded to nearest)."""
    return (int(tick) * 2000 + 49875) // 99750


def read_tagstream(path):
    """The action points of a ``.tagstream``: list of (line, usec, gesture 1..12).

    Raises:
        InputFileError: a missing header, a line that is not ``tick;G<k> name`` (named by
            its line), a gesture outside 1..12, no action point. OSError: unreadable.
    """
    lines = read_regular_file(path).decode("ascii", "replace").splitlines()
    if not lines or lines[0].strip() != "XQPCTick;Tag":
        raise InputFileError(f"{path}:1: expected the header XQPCTick;Tag")
    points = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        match = TAG_RE.fullmatch(line.strip())
        if match is None:
            raise InputFileError(f"{path}:{number}: expected tick;G<k> name, got {line.strip()[:60]!r}")
        gesture = int(match.group(2))
        if not 1 <= gesture <= NUM_CLASSES:
            raise InputFileError(f"{path}:{number}: gesture G{gesture} is outside G1..G{NUM_CLASSES}")
        points.append((number, tick_to_usec(int(match.group(1))), gesture))
    if not points:
        raise InputFileError(f"{path}: no action points")
    return points


def plan_samples(raw, dataset=None, ignored=None):
    """One sample per action point of each sequence, sequences sorted by name.

    Every tagstream is read here (they are small); a sequence whose tags are malformed,
    name another gesture than its file or are not in time order is recorded as failed.

    Raises:
        FileNotFoundError: no folder. InputFileError: a ``.csv`` with another name form, a
            ``.csv`` without its ``.tagstream``, no files.
    """
    samples, skipped, failed = [], [], []
    for path, match in list_named(raw, NAME_RE, "MSRC-12", ".csv"):
        setup, replication, gesture, _, person = (int(g) if g.isdigit() else g for g in match.groups())
        stem = path.name[:-len(".csv")]
        tags = path.with_name(stem + ".tagstream")
        if not tags.is_file():
            raise InputFileError(f"{path}: its action points {tags.name} are missing")
        try:
            points = read_tagstream(tags)
            for number, _, tag_gesture in points:
                if tag_gesture != gesture:
                    raise InputFileError(f"{tags}:{number}: gesture G{tag_gesture}, but the file name says "
                                         f"G{gesture}")
            times = [usec for _, usec, _ in points]
            if any(b <= a for a, b in zip(times, times[1:])):
                raise InputFileError(f"{tags}: action points are not in increasing time order")
        except (InputFileError, OSError) as exc:
            failed.append(dict(file=str(tags), reason=str(exc)))
            continue
        part = "train" if person % 2 == 1 else "val"
        for k in range(1, len(points) + 1):
            name = f"{stem}_{k}"
            if ignored and (name in ignored or stem in ignored):
                skipped.append(name)
                continue
            samples.append(dict(name=name, path=f"{path} (action point {k}, {tags.name}:{points[k - 1][0]})",
                                label=gesture - 1, ids=(setup, -1, person, replication),
                                split=f"msrc12-xsub/{part}", extra=str(points[k - 1][1]),
                                source=(str(path), str(tags), k)))
    return dict(dataset="msrc12", samples=samples, skipped=skipped, failed=failed,
                params=dict(window_rule=WINDOW_RULE))


def read_sequence(path):
    """The tracked frames of one ``.csv``: (times (T,) int64 usec, joints (3, T, 20) float32 metres).

    Raises:
        InputFileError: a line without 81 numbers or with one that is not a number (named by
            its line), a value float32 cannot hold, no tracked frame. OSError: unreadable.
    """
    text = read_regular_file(path).decode("ascii", "replace")
    try:
        values = np.array(text.split(), dtype=np.float64)
        ok = values.size % FIELDS == 0 and values.size // FIELDS == sum(1 for line in text.splitlines()
                                                                         if line.strip())
    except ValueError:
        ok = False
    if not ok:  # find the line to name (the slow path runs only for a bad file)
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != FIELDS:
                raise InputFileError(f"{path}:{number}: {len(fields)} fields, expected {FIELDS} "
                                     f"(t_usec, then 20 x x y z w)")
            for column, field in enumerate(fields, 1):
                try:
                    float(field)
                except ValueError:
                    raise InputFileError(f"{path}:{number}: field {column} {field[:30]!r} is not a number") from None
        raise InputFileError(f"{path}: no frames")
    rows = values.reshape(-1, FIELDS)
    if not (rows[:, 0] == np.round(rows[:, 0])).all():
        raise InputFileError(f"{path}: t_usec is not an integer on every line")
    tracked = np.flatnonzero(np.any(rows[:, 1:] != 0, axis=1))
    if tracked.size == 0:
        raise InputFileError(f"{path}: no tracked frame (every row is zeros)")
    rows = rows[tracked[0]:]
    xyz = rows[:, 1:].reshape(-1, NUM_JOINTS, 4)[..., :3]
    joints = checked_float32(xyz, f"{path}: line {tracked[0] + 1} on").transpose(2, 0, 1).copy()
    return rows[:, 0].astype(np.int64), joints


def instance_windows(times, action_usec):
    """Frame ranges of the instances (:data:`WINDOW_RULE`): list of (start, end), end excluded.

    Args:
        times: (T,) int64 usec of the tracked frames, increasing. action_usec: the K action
            points in increasing order.
    """
    action = np.asarray(action_usec, dtype=np.float64)
    cuts = (action[:-1] + action[1:]) / 2  # K - 1 midpoints
    # frames with time <= cut belong to the earlier instance
    bounds = [0, *np.searchsorted(times, cuts, side="right").tolist(), len(times)]
    return list(zip(bounds[:-1], bounds[1:]))


def _sequence(csv_path, tags):
    """(joints, points, windows) of one sequence, parsed once per process for all its instances."""
    key = tuple((str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in (csv_path, tags))
    if _LAST[0] != key:
        _LAST[0] = None
        times, joints = read_sequence(csv_path)
        points = read_tagstream(tags)
        _LAST[1] = (joints, points, instance_windows(times, [usec for _, usec, _ in points]))
        _LAST[0] = key
    return _LAST[1]


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """Instance k of a sequence, ``source = (csv, tagstream, k)``: ``("ok", xyz (3, T, 20, M)
    float32 metres, T, 1)``, or ``("ok", T)``.

    Raises:
        InputFileError: a malformed file (:func:`read_sequence`, :func:`read_tagstream`), or
            an instance without frames (its action points lie outside the tracked frames).
    """
    csv_path, tags, k = source
    joints, points, windows = _sequence(csv_path, tags)
    start, end = windows[k - 1]
    if end <= start:
        raise InputFileError(f"{tags}:{points[k - 1][0]}: action point {k} has no tracked frames in its window "
                             f"of {csv_path}")
    return as_sample(joints[:, start:end], max_bodies, frames_only)


def group_key(source):
    """The sequence of an instance: a worker gets all instances of one sequence together."""
    return source[0]
