"""One writer at a time per store and per run folder.

:func:`exclusive` holds an OS file lock (``filelock``, ``flock`` on Unix) on the sibling
file ``<path>.lock`` while a command writes ``path``, and records who holds it in
``<path>.lock.json`` (pid, host, start time, command). A second writer is refused at once
with that record in the message. The OS releases the lock when its holder dies, even by
``kill -9``, so a lock is never stale: the next writer takes it over and says so. The lock
sits beside ``path``, not inside it, so replacing a store does not remove the lock that
guards the replacement. A clean release deletes both files (only a killed holder leaves a
``.lock`` behind, which the next writer takes over and deletes): the file is unlinked while
still locked, and a writer that locked a file unlinked under it (it opened the old file just
before) sees that the path no longer names the file it holds and locks the new one. Locks are advisory and need a file system with working ``flock``
(local disks; some network file systems do not provide it).

Readers (training and evaluation jobs) hold :func:`shared` on the same ``<path>.lock``: any
number of readers at once, no writer while one reads (``modalities --overwrite`` during a
``pretrain`` is refused instead of changing the data under it), no reader while a writer
writes. The last reader out deletes the lock file the way a writer does (it takes the lock
exclusively for that moment, so it never deletes a file another reader holds).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

try:
    import fcntl
except ImportError:  # Windows: no shared locks (writers still exclude each other through filelock)
    fcntl = None


class LockedError(RuntimeError):
    """Another process is writing the same store or run folder; the message names it."""


def lock_paths(path) -> tuple[Path, Path]:
    """``(<path>.lock, <path>.lock.json)``: the lock file and its holder record."""
    path = Path(path)
    return path.with_name(path.name + ".lock"), path.with_name(path.name + ".lock.json")


#: Times a writer retries when the lock file it locked was deleted by a releasing holder.
RELOCK_ATTEMPTS = 5


def _inode(path: Path) -> int | None:
    """The inode ``path`` names now (None: no such file)."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _lock(lock_file: Path):
    """A held ``FileLock`` on the file ``lock_file`` names now (see the module docstring), or
    ``filelock.Timeout`` when another process holds it."""
    for _ in range(RELOCK_ATTEMPTS):
        held = {}
        lock = FileLock(str(lock_file), timeout=0, on_acquired=lambda fd: held.update(inode=os.fstat(fd).st_ino))
        lock.acquire()
        if _inode(lock_file) == held.get("inode"):
            return lock
        lock.release()  # we hold a file its last holder deleted on release: lock the one the path names now
    raise _Moved(str(lock_file))


class _Moved(Timeout):
    """The lock file was replaced under every try: another writer keeps re-creating it."""


def _holder(record_file: Path) -> dict:
    try:
        return json.loads(record_file.read_text())
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command', '')}").rstrip(": ")


@contextmanager
def exclusive(path, what="store", log=None):
    """Hold the write lock of ``path`` for the ``with`` block.

    Args:
        path: the store or run folder to be written (it need not exist yet).
        what: a word for messages (``"store"``, ``"run folder"``).
        log: optional callable told when a lock left by a dead process is taken over.

    Raises:
        LockedError: another live process holds the lock; the message gives its pid,
            host, start time and command.
    """
    lock_file, record_file = lock_paths(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = None
    for attempt in range(READER_RETRIES):
        try:
            lock = _lock(lock_file)
            break
        except _Moved:
            break
        except Timeout:
            holder = _holder(record_file)
            if holder:
                raise LockedError(f"{what} {path} is being written by another process ({_describe(holder)}); "
                                  "wait for it to finish or stop it (its lock goes with it)") from None
            time.sleep(RETRY_SECONDS)  # no writer's record: readers, or one that is just leaving
    if lock is None and not _holder(record_file) and lock_file.exists() and _held_shared(lock_file):
        raise LockedError(f"{what} {path} is being read by another process (a training or evaluation job); "
                          f"wait for it to finish or stop it, or write to a new {what}") from None
    if lock is None:
        raise LockedError(f"{what} {path} is being written by another process ({_describe(_holder(record_file))}); "
                          "wait for it to finish or stop it (its lock goes with it)") from None
    try:
        left = _holder(record_file)
        if left and log is not None:  # its holder ended without removing the record: killed
            log(f"taking over the lock of {what} {path} left by a process that is gone ({_describe(left)})")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
        record_file.write_text(json.dumps(record))
        yield
    finally:
        record_file.unlink(missing_ok=True)
        lock_file.unlink(missing_ok=True)  # while still locked: see the module docstring
        lock.release()


#: A reader or writer refused by a lock without a holder record tries again this often,
#: RETRY_SECONDS apart: a reader that is just leaving holds the lock alone for a moment.
READER_RETRIES = 10
RETRY_SECONDS = 0.02


@contextmanager
def shared(path, what="store"):
    """Hold the read lock of ``path`` for the ``with`` block (see the module docstring).

    Args:
        path: the store to be read.
        what: a word for messages.

    Raises:
        LockedError: a process is writing ``path``; the message gives its pid, host,
            start time and command.
    """
    if fcntl is None:
        yield
        return
    lock_file, record_file = lock_paths(path)
    try:
        fd = _shared_fd(lock_file, record_file, path, what)
    except (PermissionError, OSError) as exc:
        if isinstance(exc, LockedError) or getattr(exc, "errno", None) not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # A store in a folder this user cannot write (a shared, read-only copy): no writer
        # of ours can write there either, so it is read without a lock.
        yield
        return
    try:
        yield
    finally:
        try:  # the last reader deletes the lock file, holding it alone (as a writer does)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _inode(lock_file) == os.fstat(fd).st_ino:
                lock_file.unlink(missing_ok=True)
        except OSError:
            pass  # other readers still hold it: the last of them deletes it
        os.close(fd)


def _shared_fd(lock_file: Path, record_file: Path, path, what) -> int:
    """An open descriptor of ``lock_file`` holding a shared ``flock`` on the file the path names now."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(READER_RETRIES):
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = _holder(record_file)
            if holder:
                raise LockedError(f"{what} {path} is being written by another process ({_describe(holder)}); "
                                  "wait for it to finish (or stop it), then run this again") from None
            time.sleep(RETRY_SECONDS)  # a reader that is just leaving, or a writer about to record itself
            continue
        if _inode(lock_file) == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # locked a file deleted on release: lock the one the path names now
    holder = _holder(record_file)
    raise LockedError(f"{what} {path} is being written by another process ({_describe(holder)}); "
                      "wait for it to finish (or stop it), then run this again")


def _held_shared(lock_file: Path) -> bool:
    """True when readers hold ``lock_file``: it cannot be locked exclusively, but shared it can."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False  # nobody holds it (released at close; the file is left to its owner)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True  # shared beside others: readers
        except OSError:
            return False  # held exclusively: a writer
    finally:
        os.close(fd)
