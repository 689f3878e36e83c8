"""UTD-MHAD skeletons (Chen, Jafari, Kehtarnavaz, ICIP 2015): one MATLAB ``.mat`` per sequence.

Files ``aA_sS_tT_skeleton.mat`` (action 1..27, subject 1..8, trial) hold the variable
``d_skel``, (20, 3, T) metres, one body, Kinect v1 joints in UTD's own order (its
``Skeleton_joint_order.txt``: head, shoulder centre, spine, hip centre, then the SDK
order). The reader reorders them to the SDK 1.x order of
:data:`ikem_data.layouts.KINECT_V1_20` (:data:`UTD_TO_SDK`). Benchmark ``utd-xsub``:
subjects 1, 3, 5, 7 train, 2, 4, 6, 8 val (the dataset's protocol). Ids stored: (setup -1,
camera -1, subject, replication = trial). Files are read with :func:`scipy.io.loadmat`,
which decodes MATLAB arrays and never runs anything the file carries.
"""

from __future__ import annotations

import io
import re

import numpy as np

from ikem_data.files import read_regular_file
from ikem_data.formats.folder import InputFileError, as_sample, checked_float32, list_named
from ikem_data.layouts import KINECT_V1_20, get_layout

NAME_RE = re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton\.mat")
NUM_CLASSES = 27
TRAIN_SUBJECTS = (1, 3, 5, 7)
NUM_JOINTS = get_layout(KINECT_V1_20).num_joints  # 20
#: Row i of the SDK order is row UTD_TO_SDK[i] of a UTD file (UTD lists head, shoulder
#: centre, spine, hip centre first; the SDK order is hip centre, spine, shoulder centre, head).
UTD_TO_SDK = (3, 2, 1, 0) + tuple(range(4, 20))
VARIABLE = "d_skel"


def plan_samples(raw, dataset=None, ignored=None):
    """The ``.mat`` files of the Skeleton folder, sorted by name, minus ``ignored``.

    Raises:
        FileNotFoundError: no folder. InputFileError: a ``.mat`` with another name form,
            an action outside 1..27 or a subject outside 1..8, no files.
    """
    samples, skipped = [], []
    for path, match in list_named(raw, NAME_RE, "UTD-MHAD skeleton", ".mat"):
        action, subject, trial = (int(g) for g in match.groups())
        if not 1 <= action <= NUM_CLASSES or not 1 <= subject <= 8:
            raise InputFileError(f"{path}: action {action} or subject {subject} is outside UTD-MHAD's "
                                 f"1..{NUM_CLASSES} and 1..8")
        name = path.name[:-len("_skeleton.mat")]
        if ignored and name in ignored:
            skipped.append(name)
            continue
        part = "train" if subject in TRAIN_SUBJECTS else "val"
        samples.append(dict(name=name, path=str(path), label=action - 1, ids=(-1, -1, subject, trial),
                            split=f"utd-xsub/{part}"))
    return dict(dataset="utd-mhad", samples=samples, skipped=skipped, failed=[])


def read_sequence(path) -> np.ndarray:
    """The joints of one file: (3, T, 20) float32 metres, reordered to the SDK 1.x order.

    Raises:
        InputFileError: not a MATLAB file scipy can read, no ``d_skel``, a shape other than
            (20, 3, T >= 1), a non-finite value. OSError: unreadable.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        contents = loadmat(io.BytesIO(read_regular_file(path)), variable_names=[VARIABLE])
    except (MatReadError, ValueError, TypeError, NotImplementedError) as exc:
        raise InputFileError(f"{path}: not a MATLAB file scipy can read ({exc})") from None
    if VARIABLE not in contents:
        raise InputFileError(f"{path}: no variable {VARIABLE}")
    try:
        skeleton = np.asarray(contents[VARIABLE], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputFileError(f"{path}: variable {VARIABLE} is not numeric") from None
    if skeleton.ndim != 3 or skeleton.shape[:2] != (NUM_JOINTS, 3) or skeleton.shape[2] < 1:
        raise InputFileError(f"{path}: variable {VARIABLE} has shape {skeleton.shape}, "
                             f"not ({NUM_JOINTS}, 3, T >= 1)")
    joints = checked_float32(skeleton, f"{path}: variable {VARIABLE}")[list(UTD_TO_SDK)]
    return joints.transpose(1, 2, 0).copy()  # (V, C, T) -> (C, T, V)


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """One sequence: ``("ok", xyz (3, T, 20, M) float32 metres, T, 1)``, or ``("ok", T)``."""
    return as_sample(read_sequence(source), max_bodies, frames_only)
