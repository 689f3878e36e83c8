"""Northwestern-UCLA Multiview Action3D (Wang et al., CVPR 2014), as CTR-GCN's ``all_sqe`` folder.

One JSON file per sequence, ``aAA_sSS_eEE_vVV.json`` (action, subject, repetition, view),
holding ``{"file_name": name, "skeletons": T x 20 x 3, "label": 1..10}``: one body, Kinect
v1 joints in the SDK 1.x order (:data:`ikem_data.layouts.KINECT_V1_20`), camera-space
metres. The ten action codes a01-a06, a08, a09, a11, a12 are the labels 1..10 (stored
0-based); the file's ``label`` must agree with its name. Benchmark ``nwucla-xview``:
views 1 and 2 train, view 3 val, as CTR-GCN (1,020 / 464 sequences). Ids stored:
(setup -1, camera = view, subject, replication = repetition). JSON is parsed with the
standard library (it carries no code); two real sequences have a single frame and are kept.
"""

from __future__ import annotations

import json
import re

import numpy as np

from ikem_data.files import read_regular_file
from ikem_data.formats.folder import InputFileError, as_sample, checked_float32, list_named
from ikem_data.layouts import KINECT_V1_20, get_layout
from ikem_data.quoting import quote

NAME_RE = re.compile(r"a(\d\d)_s(\d\d)_e(\d\d)_v(\d\d)\.json")
#: Action code in the file name -> 1-based label (the codes a07 and a10 are not in the set).
ACTION_LABELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7, 9: 8, 11: 9, 12: 10}
TRAIN_VIEWS = (1, 2)
NUM_JOINTS = get_layout(KINECT_V1_20).num_joints  # 20


def plan_samples(raw, dataset=None, ignored=None):
    """The sequences of the ``all_sqe`` folder, sorted by name, minus ``ignored``.

    Raises:
        FileNotFoundError: no folder. InputFileError: a ``.json`` whose name is not
            ``aAA_sSS_eEE_vVV.json``, an unknown action code or view, no files.
    """
    samples, skipped = [], []
    for path, match in list_named(raw, NAME_RE, "NW-UCLA all_sqe", ".json"):
        action, subject, repetition, view = (int(g) for g in match.groups())
        if action not in ACTION_LABELS:
            raise InputFileError(f"{path}: action code a{action:02d} is not one of NW-UCLA's ten "
                                 f"({', '.join(f'a{a:02d}' for a in ACTION_LABELS)})")
        if view not in (1, 2, 3):
            raise InputFileError(f"{path}: view v{view:02d} is not 1, 2 or 3")
        name = path.name[:-len(".json")]
        if ignored and name in ignored:
            skipped.append(name)
            continue
        part = "train" if view in TRAIN_VIEWS else "val"
        samples.append(dict(name=name, path=str(path), label=ACTION_LABELS[action] - 1,
                            ids=(-1, view, subject, repetition), split=f"nwucla-xview/{part}"))
    return dict(dataset="nwucla", samples=samples, skipped=skipped, failed=[])


def read_sequence(path) -> np.ndarray:
    """The joints of one sequence: (3, T, 20) float32 metres, SDK 1.x joint order.

    Raises:
        InputFileError: not JSON (with its line), a missing or wrong field, a label that
            disagrees with the name, a shape other than T x 20 x 3, a non-finite value.
        OSError: unreadable.
    """
    try:
        record = json.loads(read_regular_file(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}:{exc.lineno}: not JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:  # the decoder recurses per level: a file of 10^5 '[' ends here, not in a traceback
        raise InputFileError(f"{path}: not a sequence file: its JSON is nested too deep to read") from None
    if not isinstance(record, dict) or "skeletons" not in record or "label" not in record:
        raise InputFileError(f"{path}: expected an object with fields skeletons and label")
    match = NAME_RE.fullmatch(str(path).replace("\\", "/").rsplit("/", 1)[-1])
    if match and record["label"] != ACTION_LABELS.get(int(match.group(1))):
        raise InputFileError(f"{path}: field label is {quote(record['label'])} but the name's action "
                             f"a{match.group(1)} is label {ACTION_LABELS.get(int(match.group(1)))}")
    try:
        joints = np.asarray(record["skeletons"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputFileError(f"{path}: field skeletons is not a T x {NUM_JOINTS} x 3 array of numbers") from None
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or joints.shape[0] < 1:
        raise InputFileError(f"{path}: field skeletons has shape {joints.shape}, not (T >= 1, {NUM_JOINTS}, 3)")
    return checked_float32(joints, f"{path}: field skeletons").transpose(2, 0, 1).copy()


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """One sequence: ``("ok", xyz (3, T, 20, M) float32 metres, T, 1)``, or ``("ok", T)``."""
    return as_sample(read_sequence(source), max_bodies, frames_only)
