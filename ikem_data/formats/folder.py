"""What the readers of one-file-per-sequence datasets share: listing a folder by a name
pattern, and refusing values a store cannot hold (NW-UCLA, UTD-MHAD, MSRC-12)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)


class InputFileError(ValueError):
    """An input file that cannot be used; the message names the file (and its line or field)."""


def list_named(raw, pattern: re.Pattern, what: str, suffix: str):
    """The files of folder ``raw`` ending in ``suffix`` whose names match ``pattern``, sorted by name.

    Returns:
        list of (path, match) pairs.

    Raises:
        FileNotFoundError: ``raw`` is not a folder. InputFileError: a ``suffix`` file whose
            name does not match (named, with the expected form), or no such file at all.
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"{what} folder {raw} does not exist")
    found = []
    for path in sorted(raw.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(suffix):
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            raise InputFileError(f"{path}: not a {what} file name (expected {pattern.pattern})")
        found.append((path, match))
    if not found:
        raise InputFileError(f"no {suffix} files in {raw} ({what})")
    return found


def checked_float32(values, where: str) -> np.ndarray:
    """``values`` as float32, refusing NaN, inf and numbers beyond float32 (named by ``where``).

    Raises:
        InputFileError: the first bad value, with its flat index.
    """
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > _F32_MAX)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InputFileError(f"{where}: value {values.flat[index]!r} at element {index} cannot be stored "
                             f"(not a finite float32)")
    return values.astype(np.float32)


def as_sample(joints: np.ndarray, max_bodies: int, frames_only: bool):
    """The reader protocol's result for a one-body sequence ``joints`` (3, T, V) float32."""
    n_frames = int(joints.shape[1])
    if frames_only:
        return ("ok", n_frames)
    xyz = np.zeros(joints.shape + (max_bodies,), dtype=np.float32)
    xyz[..., 0] = joints
    return ("ok", xyz, n_frames, 1)
