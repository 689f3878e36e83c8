"""Reading input files safely: only regular files, never a pipe or a device that would block or never end."""

from __future__ import annotations

import os
import stat


def read_regular_file(path, what="file") -> bytes:
    """The bytes of ``path``, refusing anything that is not a regular file.

    A named pipe (FIFO) would block ``open`` forever and a device can be endless, so the
    file is opened non-blocking and checked with ``fstat`` on the open descriptor (no
    window between the check and the read); symbolic links to regular files are fine.

    Raises:
        OSError: the path does not exist or cannot be read, or it is not a regular file
            (the message names it and what it is).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise OSError(f"{path}: {what} is {kind}; only regular files are read")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = None
            return handle.read()
    finally:
        if fd is not None:
            os.close(fd)
