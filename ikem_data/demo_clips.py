"""The bundled demo data: MIT Kinect v2 captures cut into labelled, overlapping clips.

The five captures in ``ikem_data/resources/kinect_v2_msr_labanotation`` (one person,
arm gestures, 154-371 frames each) are far too few samples to train on, so the demo cuts
each into windows of ``window`` frames every ``stride`` frames. Clips from the first
``train_fraction`` of a capture form the train split and clips from the rest the val
split (or, with ``block``, every third block of a capture is val); no clip straddles a
boundary, so no frame is in both splits. The val split is
class-balanced: every class keeps as many val clips as the shortest capture gives,
spread evenly over its val part, so chance and the majority-class baseline are both
1 / 5 and top-1 is not inflated by always answering the longest capture's class.

The clips are written as Kinect CSV files (lines copied byte for byte from the capture)
with a ``file,label,split`` table, which is exactly the input of
``ikem-data gendata --input-format kinect-csv``.
"""

import csv
from importlib import resources
from pathlib import Path

import numpy as np

#: Capture file -> class name; the label is the position in this tuple.
DEMO_CLASSES = (
    ("Ges01_wavehand.csv", "wave hand"),
    ("Ges02_balancinghands.csv", "balancing hands"),
    ("Ges03_drawlines.csv", "draw lines"),
    ("Ges04_comehere.csv", "come here"),
    ("KinectReader_joints.csv", "free session"),
)


def capture_dir():
    """Folder of the packaged MIT Kinect captures (and their licence)."""
    return Path(str(resources.files("ikem_data") / "resources" / "kinect_v2_msr_labanotation"))


def _windows(first, stop, window, stride):
    return range(first, stop - window + 1, stride)


def _evenly(starts, count):
    """``count`` of ``starts`` spread evenly from the first to the last."""
    picks = np.unique(np.linspace(0, len(starts) - 1, count).round().astype(int))
    return [starts[i] for i in picks]


def _split_starts(n_frames, window, stride, train_fraction, block):
    """Clip starts per split: the tail of the capture is val, or every third block is."""
    if block is None:
        boundary = int(n_frames * train_fraction)
        return {"train": list(_windows(0, boundary, window, stride)),
                "val": list(_windows(boundary, n_frames, window, stride))}
    parts = {"train": [], "val": []}
    for index, first in enumerate(range(0, n_frames, block)):
        parts["val" if index % 3 == 2 else "train"] += _windows(first, min(first + block, n_frames), window, stride)
    return parts


def write_demo_clips(out_dir, window=40, stride=3, train_fraction=0.65, balanced_val=True, block=None):
    """Cut the packaged captures into clip CSVs and a labels table.

    Args:
        out_dir: folder to write ``clips/*.csv`` and ``labels.csv`` into (created).
        window: frames per clip.
        stride: frames between the starts of consecutive clips.
        train_fraction: share of each capture's frames whose clips go to train (the
            rest, the capture's tail, gives the val clips); used when ``block`` is None.
        block: cut each capture into consecutive blocks of this many frames instead;
            every third block gives val clips, the others train clips (val recordings
            then lie between train ones instead of after all of them).
        balanced_val: keep the same number of val clips for every class (the fewest any
            capture gives), evenly spaced; False keeps every val window.

    Returns:
        Path of ``labels.csv`` (columns ``file,label,split``; label 0-based as in
        :data:`DEMO_CLASSES`, split ``train`` or ``val``).

    Raises:
        ValueError: a capture too short to give at least one train and one val clip.
    """
    out_dir = Path(out_dir)
    clip_dir = out_dir / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    captures = []
    for label, (file_name, _) in enumerate(DEMO_CLASSES):
        lines = (capture_dir() / file_name).read_bytes().splitlines(keepends=True)
        parts = _split_starts(len(lines), window, stride, train_fraction, block)
        for split, starts in parts.items():
            if len(starts) == 0:
                raise ValueError(f"{file_name}: {len(lines)} frames give no {split} clip of {window} frames")
        captures.append((label, file_name, lines, parts))
    if balanced_val:
        fewest = min(len(parts["val"]) for *_, parts in captures)
        for *_, parts in captures:
            parts["val"] = _evenly(parts["val"], fewest)
    rows = []
    for label, file_name, lines, parts in captures:
        for split, starts in parts.items():
            for start in starts:
                clip = clip_dir / f"{Path(file_name).stem}_t{start:03d}.csv"
                clip.write_bytes(b"".join(lines[start:start + window]))
                rows.append((str(clip.relative_to(out_dir)), label, split))
    labels = out_dir / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "label", "split"))
        writer.writerows(rows)
    return labels
