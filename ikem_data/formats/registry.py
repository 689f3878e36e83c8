"""The input formats ``ikem-data gendata`` reads: one registry, format name -> reader, layout, benchmarks.

A format is one :class:`InputFormat` entry here and one reader module. gendata keeps no
per-format branch: it asks the entry what the input is, imports the reader by name (in
spawned parser workers too) and calls it. Adding a dataset is a reader module, a layout
table (:mod:`ikem_data.layouts`) if its skeleton is new, its benchmark names
(:data:`ikem_data.names.BENCHMARKS`) and an entry (:func:`register`).

A reader module provides:

- ``plan_samples(raw, dataset, ignored, **options) -> dict`` with ``dataset`` (the resolved
  name), ``samples`` (dicts ``name``, ``path`` (where, for messages), ``label`` (0-based),
  ``ids`` (setup, camera, subject, replication; -1 where the input has none), ``split``
  (``"benchmark/part,..."`` or None), and optionally ``source`` (the worker's task; default
  ``path``) and ``extra`` (hashed into the inputs' fingerprint)), ``skipped`` (names left
  out by ``ignored``), ``failed`` (``{"file", "reason"}``: inputs wrong on their own) and
  optionally ``notes`` and ``params`` (store-identity entries that differ from the
  defaults: ``raw``, ``labels``, ``body_policy``, ``ignore_list``, or the format's own,
  such as a window rule). ``ignored`` is the frozenset of names of ``--ignore-list``, or
  None when none was given (the format's default list, if it has one). ``options`` are
  the entry's :attr:`InputFormat.options` the user gave. Raises ValueError or OSError
  naming the file for input that cannot be used at all.
- ``load_sample(source, max_bodies, frames_only=False, body_policy="listed")``: runs in a
  worker; returns ``("ok", xyz (3, T, V, M) float32 metres, T, bodies)`` or with
  ``frames_only`` ``("ok", T)``, and raises ValueError/OSError naming file and line.
- optionally ``group_key(source)`` (tasks with one key go to one worker together, e.g.
  the segments of one video), ``store_splits(names, samples, params) -> (splits, notes)``
  (default: each sample's ``split`` membership) and ``prepare_workers()`` (run once in
  the parent before workers start, e.g. to compile a numba parser into the cache).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ikem_data.layouts import KINECT_V1_20, KINECT_V2_25


@dataclass(frozen=True)
class InputFormat:
    """One input format of ``gendata``.

    Attributes:
        name: the ``--input-format`` value.
        reader: the reader module's import path.
        layout: the skeleton layout its stores record (:mod:`ikem_data.layouts`).
        datasets: ``--dataset`` values it accepts (the first is not a default: None
            asks the reader to infer or use its only one).
        benchmarks: the benchmarks its stores can hold.
        raw: what ``--raw`` names, for messages and ``--help``.
        bodies: the body selection its inputs come with, or None when ``--bodies``
            applies (NTU ``.skeleton`` files).
        options: the optional ``plan_samples`` keywords it takes (``"labels"``).
        in_process: parse in this process (the input is in memory already: pyskl).
        unit: what one input is called in the log (``files`` or ``samples``).
        max_bodies: the default body slots M of its stores (1 for one-person datasets:
            a second slot would be zeros the encoders process for nothing).
    """

    name: str
    reader: str
    layout: str
    datasets: tuple
    benchmarks: tuple
    raw: str
    bodies: str | None = None
    options: tuple = ()
    in_process: bool = False
    unit: str = "samples"
    max_bodies: int = 2

    def module(self):
        """The reader module (imported on first use)."""
        return importlib.import_module(self.reader)


FORMATS: dict[str, InputFormat] = {}


def register(fmt: InputFormat) -> InputFormat:
    """Add (or replace) an input format; returns it."""
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> InputFormat:
    """The entry of ``name``.

    Raises:
        ValueError: an unknown format; the message lists the known ones.
    """
    if name not in FORMATS:
        raise ValueError(f"--input-format must be one of {', '.join(FORMATS)}, not {name!r}")
    return FORMATS[name]


for _fmt in (
    InputFormat("ntu", "ikem_data.formats.ntu", KINECT_V2_25, ("ntu60", "ntu120"),
                ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"),
                "a folder of NTU RGB+D .skeleton files", unit="files"),
    InputFormat("kinect-csv", "ikem_data.formats.kinect_csv", KINECT_V2_25, ("kinect",), ("custom",),
                "a folder of Kinect v2 CSV captures listed in --labels", options=("labels",), unit="files"),
    InputFormat("pyskl", "ikem_data.formats.pyskl", KINECT_V2_25, ("ntu60", "ntu120"),
                ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"),
                "a pyskl annotation pickle (.pkl)", bodies="pyskl", in_process=True),
    InputFormat("pku-mmd", "ikem_data.formats.pku", KINECT_V2_25, ("pku1", "pku2"),
                ("pku1-xsub", "pku1-xview", "pku2-xsub", "pku2-xview"),
                "the PKU-MMD folder", bodies="as-recorded"),
    InputFormat("nwucla", "ikem_data.formats.nwucla", KINECT_V1_20, ("nwucla",), ("nwucla-xview",),
                "the NW-UCLA all_sqe folder of .json files", bodies="as-recorded", unit="files", max_bodies=1),
    InputFormat("utd-mhad", "ikem_data.formats.utd_mhad", KINECT_V1_20, ("utd-mhad",), ("utd-xsub",),
                "the UTD-MHAD Skeleton folder of .mat files", bodies="as-recorded", unit="files", max_bodies=1),
    InputFormat("msrc12", "ikem_data.formats.msrc12", KINECT_V1_20, ("msrc12",), ("msrc12-xsub",),
                "the MSRC-12 folder of .csv and .tagstream files", bodies="as-recorded", max_bodies=1),
):
    register(_fmt)
