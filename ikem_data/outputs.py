"""Output paths checked before the work: a picture that takes 20 s to render must not fail at
the last step because its name is a folder (issue 22, class 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ikem_data.files import kind_of


class OutputError(ValueError):
    """An output path that cannot be written; the message names it and why."""


def check_output_file(path, option: str = "--out") -> Path:
    """``path`` as a Path if a file can be written there (replacing a regular file is fine).

    Nothing is created: the writer makes the missing folders later. Checked: ``path`` is
    not a folder, pipe or device; its nearest existing ancestor is a folder we may write
    into (a file there would make ``mkdir`` fail).

    Raises:
        OutputError: the message names ``option``, the path and what is in the way.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # the latter: a file where a folder of the path should be
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"{option} {path} is {kind_of(mode)}, not a file that can be written")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: no permission to write into {ancestor}")
    return path
