"""Reading and writing files safely: only regular files are read (never a pipe or a device
that would block or never end), and a full disk is one clear line, not a traceback."""

from __future__ import annotations

import errno
import os
import stat

#: errno values that mean "the disk (or this process's file-size limit or quota) is full".
NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def kind_of(mode) -> str:
    """What an ``st_mode`` is, in words (``"a named pipe (FIFO)"``, ``"a device"``, ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path, what="file", max_bytes=None) -> os.stat_result:
    """Refuse ``path`` unless it is a regular file (links followed) of at most ``max_bytes``.

    Only ``os.stat`` is called, never ``open``: a named pipe would block ``open`` until a
    writer appears, and a device can be endless. Call it before handing a path to a
    library that opens it (h5py, zarr, torch); :func:`read_regular_file` checks the open
    descriptor itself when we read the bytes.

    Returns:
        the ``os.stat`` result.

    Raises:
        FileNotFoundError: nothing at ``path`` (or a link to nothing).
        OSError: ``path`` is a FIFO, device, socket or folder, or larger than ``max_bytes``
            (the message names it and what it is).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path}: {what} is {kind_of(st.st_mode)}; only regular files are read")
    if max_bytes is not None and st.st_size > max_bytes:
        raise OSError(f"{path}: {what} is {st.st_size} bytes, more than the {max_bytes} such a file can hold")
    return st


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
            raise OSError(f"{path}: {what} is {kind_of(mode)}; only regular files are read")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = None
            return handle.read()
    finally:
        if fd is not None:
            os.close(fd)


class NoRoomError(OSError):
    """A write failed, or would fail, for lack of room (ENOSPC, EFBIG, EDQUOT); the message is
    one line saying what failed, what is kept and what to free."""

    def __str__(self):
        return str(self.strerror)


def is_no_room(exc) -> bool:
    """True for an ``OSError`` (anywhere in its ``__cause__``/``__context__`` chain) that means a full disk."""
    return any(isinstance(e, OSError) and e.errno in NO_ROOM for e in _chain(exc))


def _chain(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _mb(nbytes) -> str:
    return f"{max(1, -(-int(nbytes) // (1 << 20)))} MB"


def no_room_message(path, what, kept, code=errno.ENOSPC, reason=None, need=None, rerun="rerun the same command"):
    """``writing <what> <path> failed: <reason>; <kept>: <what to free>, then <rerun>``, one line."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if code == errno.EFBIG:
        why = reason or "the file reached this process's file-size limit (EFBIG)"
        remedy = "raise the file-size limit (`ulimit -f`)"
    else:
        why = reason or {errno.ENOSPC: "no space left on the device (ENOSPC)"}.get(code, os.strerror(code))
        remedy = f"free {'at least ' + _mb(need) if need else 'space'} on the disk holding {folder}"
    return f"writing {what} {path} failed: {why}; {kept}: {remedy}, then {rerun}"


def no_room(exc, path, what, kept, rerun="rerun the same command") -> NoRoomError:
    """The one-line :class:`NoRoomError` for a failed write ``exc`` (see :func:`no_room_message`)."""
    code = next((e.errno for e in _chain(exc) if isinstance(e, OSError) and e.errno in NO_ROOM), errno.ENOSPC)
    return NoRoomError(code, no_room_message(path, what, kept, code, rerun=rerun))


def ensure_room(path, nbytes, what, kept) -> None:
    """Refuse a write of about ``nbytes`` into ``path`` that the disk or the file-size limit
    cannot take, before any byte is written.

    HDF5 must hear of a full disk this way: its C library, told ENOSPC or EFBIG in the
    middle of a write, reports it and then crashes the process (segfault when the file is
    closed). The check is conservative (``nbytes`` is the uncompressed size) and costs two
    system calls.

    Raises:
        NoRoomError: less than ``nbytes`` (plus 1 MB of slack) free on ``path``'s disk, or
            ``path``'s size plus ``nbytes`` over this process's ``RLIMIT_FSIZE``.
    """
    path = os.fspath(path)
    probe = path if os.path.exists(path) else os.path.dirname(os.path.abspath(path))
    need = int(nbytes) + (1 << 20)
    try:
        st = os.statvfs(probe)
    except (OSError, AttributeError):
        st = None
    if st is not None and st.f_bavail * st.f_frsize < need:
        free = st.f_bavail * st.f_frsize
        raise NoRoomError(errno.ENOSPC, no_room_message(
            path, what, kept, errno.ENOSPC, f"{free >> 20} MB free, about {_mb(need)} needed (ENOSPC)", need - free))
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return
    if limit != resource.RLIM_INFINITY and os.path.isfile(path):
        if os.stat(path).st_size + int(nbytes) > limit:
            raise NoRoomError(errno.EFBIG, no_room_message(
                path, what, kept, errno.EFBIG, f"it would pass this process's file-size limit of {limit} bytes "
                "(EFBIG)"))
