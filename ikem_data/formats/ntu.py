"""NTU RGB+D sample names, ids, benchmarks and the official missing-skeleton lists.

Rules from METHOD.md §1.2: ids come from the name ``SsssCcccPpppRrrrAaaa`` (ASCII digits;
every id is 1-based, so a 0 such as ``A000`` is refused rather than becoming label -1);
the label is ``action - 1``; files are taken in sorted name order; only regular files
are listed (a named pipe named like a sample is refused: reading it would block); splits:

* ``ntu60-xsub`` / ``ntu120-xsub``: train = subject in :data:`XSUB60_TRAIN_SUBJECTS`
  (NTU-60) or :data:`XSUB120_TRAIN_SUBJECTS` (NTU-120, 53 subjects);
* ``ntu60-xview``: train = camera 2 or 3, val = camera 1;
* ``ntu120-xset``: train = even setup number.

NTU-60 stores carry ntu60-xsub and ntu60-xview; NTU-120 stores carry all four (the
NTU-60 benchmarks over the NTU-60 subset: setups 1-17 and actions 1-60).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ikem_data.quoting import quote

SKELETON_SUFFIX = ".skeleton"
# [0-9], not \d: \d also matches other scripts' digits, which int() would accept.
NAME_RE = re.compile(r"^S([0-9]{3})C([0-9]{3})P([0-9]{3})R([0-9]{3})A([0-9]{3})$")

XSUB60_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
XSUB120_TRAIN_SUBJECTS = XSUB60_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103))
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))

DATASETS = ("ntu60", "ntu120")
DATASET_BENCHMARKS = {
    "ntu60": ("ntu60-xsub", "ntu60-xview"),
    "ntu120": ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"),
}
NTU60_MAX_SETUP = 17
NTU60_MAX_ACTION = 60
# NTU RGB+D 120 has 32 setups and 120 actions: a larger id cannot be one of its samples
# (an action 121 would be label 120, outside a 120-class head).
NTU120_MAX_SETUP = 32
NTU120_MAX_ACTION = 120
MISSING_LIST_FILES = {
    "ntu60": "NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": "NTU_RGBD120_samples_with_missing_skeletons.txt",
}


class SampleId(NamedTuple):
    """Ids parsed from ``SsssCcccPpppRrrrAaaa`` (all 1-based as in the name)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """0-based action class (``action - 1``)."""
        return self.action - 1

    @property
    def name(self) -> str:
        return f"S{self.setup:03d}C{self.camera:03d}P{self.subject:03d}R{self.replication:03d}A{self.action:03d}"


def parse_name(name) -> SampleId:
    """Parse a sample name or file name (``.skeleton`` and folders are stripped).

    Raises:
        ValueError: the name is not ``SsssCcccPpppRrrrAaaa[.skeleton]`` with ASCII digits,
            or an id is 0 (all are 1-based); the message quotes the name.
    """
    stem = Path(str(name)).name
    if stem.endswith(SKELETON_SUFFIX):
        stem = stem[: -len(SKELETON_SUFFIX)]
    match = NAME_RE.match(stem)
    if not match:
        raise ValueError(f"{quote(name)} is not an NTU sample name (expected SsssCcccPpppRrrrAaaa.skeleton)")
    sid = SampleId(*(int(g) for g in match.groups()))
    for field, value in zip(SampleId._fields, sid):
        if value == 0:
            raise ValueError(f"{name!r}: {field} 0 is not an NTU id (ids are 1-based: "
                             f"{field} 001 is the first)")
    return sid


def list_skeleton_files(folder) -> list[Path]:
    """The ``.skeleton`` files of ``folder``, sorted by name (METHOD.md §1.2).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        ValueError: no ``.skeleton`` file in it, a ``.skeleton`` entry that is not a
            regular file (a named pipe, a folder, a broken link), or one whose name is not
            a valid ``SsssCcccPpppRrrrAaaa.skeleton`` (the message names it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"raw folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(SKELETON_SUFFIX))
    if not files:
        raise ValueError(f"no .skeleton files in {folder}")
    for path in files:
        parse_name(str(path))
        if not path.is_file():  # follows links; a FIFO would block the reader forever
            kind = ("a named pipe (FIFO)" if path.is_fifo() else "a folder" if path.is_dir()
                    else "a broken link" if path.is_symlink() and not path.exists() else "not a regular file")
            raise ValueError(f"{path} is {kind}; only regular files are read: remove it or move it out of {folder}")
    return files


def infer_dataset(ids) -> str:
    """``"ntu120"`` when any id lies outside NTU-60 (setup > 17 or action > 60), else ``"ntu60"``."""
    for sid in ids:
        if sid.setup > NTU60_MAX_SETUP or sid.action > NTU60_MAX_ACTION:
            return "ntu120"
    return "ntu60"


def check_dataset(ids, dataset) -> None:
    """Raise ValueError naming the first sample that does not belong to ``dataset``.

    NTU-60: setup <= 17 and action <= 60; NTU-120: setup <= 32 and action <= 120.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    for sid in ids:
        if sid.setup > NTU120_MAX_SETUP or sid.action > NTU120_MAX_ACTION:
            raise ValueError(f"{sid.name} is not an NTU RGB+D sample (setup <= 32, action <= 120 in NTU-120)")
        if dataset == "ntu60" and (sid.setup > NTU60_MAX_SETUP or sid.action > NTU60_MAX_ACTION):
            raise ValueError(f"{sid.name} is not in NTU-60 (setup <= 17, action <= 60); use --dataset ntu120")


def missing_list_path(dataset) -> Path:
    """Path of the packaged official missing-skeleton list of ``dataset``."""
    return Path(str(resources.files("ikem_data") / "resources" / MISSING_LIST_FILES[dataset]))


def read_ignore_list(path) -> list[str]:
    """Sample names from a text file, one per line (``.skeleton`` suffixes and blanks dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file (a FIFO would block), or not UTF-8 text.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ignore list {path} does not exist")
    if not path.is_file():
        raise ValueError(f"ignore list {path} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"ignore list {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            names.append(line[: -len(SKELETON_SUFFIX)] if line.endswith(SKELETON_SUFFIX) else line)
    return names


def missing_samples(dataset) -> list[str]:
    """The official list of samples without usable skeletons (302 for NTU-60, 535 for NTU-120)."""
    return read_ignore_list(missing_list_path(dataset))


def in_ntu60(sid: SampleId) -> bool:
    return sid.setup <= NTU60_MAX_SETUP and sid.action <= NTU60_MAX_ACTION


def is_training(sid: SampleId, benchmark: str) -> bool:
    """Whether sample ``sid`` is in the train part of ``benchmark`` (METHOD.md §1.2).

    Raises:
        ValueError: unknown benchmark.
    """
    if benchmark == "ntu60-xsub":
        return sid.subject in XSUB60_TRAIN_SUBJECTS
    if benchmark == "ntu120-xsub":
        return sid.subject in XSUB120_TRAIN_SUBJECTS
    if benchmark == "ntu60-xview":
        return sid.camera in XVIEW_TRAIN_CAMERAS
    if benchmark == "ntu120-xset":
        return sid.setup % 2 == 0
    raise ValueError(f"unknown benchmark {benchmark!r}")


def benchmark_splits(ids, dataset) -> dict[str, dict[str, np.ndarray]]:
    """Index arrays ``{benchmark: {"train": int64, "val": int64}}`` over the samples ``ids``.

    The NTU-60 benchmarks of an NTU-120 store index only the NTU-60 samples in it.
    """
    out = {}
    for benchmark in DATASET_BENCHMARKS[dataset]:
        train, val = [], []
        for index, sid in enumerate(ids):
            if benchmark.startswith("ntu60") and not in_ntu60(sid):
                continue
            (train if is_training(sid, benchmark) else val).append(index)
        out[benchmark] = {"train": np.asarray(train, dtype=np.int64), "val": np.asarray(val, dtype=np.int64)}
    return out


# -- the reader of --input-format ntu (ikem_data.formats.registry) -------------------------

def plan_samples(raw, dataset=None, ignored=None):
    """The ``.skeleton`` files of ``raw``, sorted by name, minus the ignore list.

    Args:
        raw: the folder. dataset: ``"ntu60"``/``"ntu120"``, or None to infer it.
        ignored: names to leave out; None: the dataset's official missing-skeleton list.

    Returns:
        the dict of :mod:`ikem_data.formats.registry` (``split`` None: the benchmarks
        follow from the names, :func:`store_splits`).

    Raises:
        FileNotFoundError, ValueError: see :func:`list_skeleton_files`, :func:`parse_name`,
            :func:`check_dataset`.
    """
    files = list_skeleton_files(raw)
    ids = [parse_name(str(p)) for p in files]
    if dataset is None:
        dataset = infer_dataset(ids)
    check_dataset(ids, dataset)
    params = {}
    if ignored is None:
        params["ignore_list"] = f"official:{MISSING_LIST_FILES[dataset]}"
        ignored = set(missing_samples(dataset))
    samples, skipped = [], []
    for path, sid in zip(files, ids):
        if sid.name in ignored:
            skipped.append(sid.name)
            continue
        samples.append(dict(name=sid.name, path=str(path), label=sid.label, split=None,
                            ids=(sid.setup, sid.camera, sid.subject, sid.replication)))
    return dict(dataset=dataset, samples=samples, skipped=skipped, failed=[], params=params)


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    """Parse one ``.skeleton`` file: ``("ok", xyz (3, T, 25, M) float32, T, bodies)``, or
    ``("ok", T)`` with ``frames_only`` (parsed and checked in full).

    Raises:
        ValueError, OSError: a malformed or unreadable file (:mod:`ikem_data.formats.skeleton`).
    """
    from ikem_data.formats.skeleton import load_xyz, read_skeleton

    if frames_only:
        return ("ok", int(read_skeleton(source).n_frames))
    xyz, n_frames, n_bodies = load_xyz(source, body_policy, max_bodies)
    return ("ok", xyz, int(n_frames), int(n_bodies))


def store_splits(names, samples, params):
    """The benchmarks of the dataset from the stored names: ``(splits, notes)``."""
    return benchmark_splits([parse_name(name) for name in names], params["dataset"]), []


def prepare_workers():
    """Compile (or load) the numba parser once in the parent, so workers load it from the cache."""
    from ikem_data.formats.skeleton import parse_skeleton

    parse_skeleton(b"0\n")
