"""Write locks (ikem_data.locks): one writer at a time, and no lock file left behind by a
command that ended cleanly (a 0-byte <name>.lock used to outlive every store and run)."""

import signal
import subprocess
import sys
import textwrap

import pytest

from ikem_data import locks
from ikem_data.locks import LockedError, exclusive, lock_paths


def test_a_clean_release_leaves_no_lock_file(tmp_path):
    target = tmp_path / "s.zarr"
    with exclusive(target):
        assert all(p.exists() for p in lock_paths(target))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):  # a failing job releases the same way
        with exclusive(target):
            raise ValueError("job failed")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_holder_leaves_its_lock_file_and_the_next_writer_removes_it(tmp_path):
    target = tmp_path / "run"
    code = textwrap.dedent(f"""
        import time
        from ikem_data.locks import exclusive
        with exclusive({str(target)!r}, "run folder"):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            with exclusive(target, "run folder"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert lock_paths(target)[0].exists()
    said = []
    with exclusive(target, "run folder", log=said.append):
        pass
    assert "gone" in said[0] and list(tmp_path.iterdir()) == []


def test_a_writer_that_locked_a_deleted_lock_file_locks_the_current_one(tmp_path, monkeypatch):
    """The race deleting on release opens: B opens <name>.lock, A releases (unlinks it), B's flock
    succeeds on the unlinked file while C creates and locks a new one. B must notice that the path
    names another file and lock that one; here os.stat reports another inode the first time."""
    target = tmp_path / "s.zarr"
    real, seen = locks._inode, []

    def moved_once(path):  # the first look finds another file at the path
        seen.append(path)
        return real(path) + (1 if len(seen) == 1 else 0)

    monkeypatch.setattr(locks, "_inode", moved_once)
    with exclusive(target):
        assert len(seen) == 2  # released the stale file, locked the current one
    monkeypatch.setattr(locks, "_inode", lambda path: None)  # the path never names the file locked
    with pytest.raises(LockedError, match="being written by another process"):
        with exclusive(target):
            pass
    assert list(tmp_path.iterdir()) == [lock_paths(target)[0]]  # the last try's file, no holder record


def test_the_lock_file_is_deleted_while_still_locked(tmp_path, monkeypatch):
    """Unlinking after the release would delete a file the next writer already locked, and a third
    writer would then lock a new one beside it: two writers at once."""
    target, at_release = tmp_path / "s.zarr", []
    real_release = locks.FileLock.release

    def release(self, *args, **kwargs):
        at_release.append(lock_paths(target)[0].exists())
        return real_release(self, *args, **kwargs)

    monkeypatch.setattr(locks.FileLock, "release", release)
    with exclusive(target):
        pass
    assert at_release and not any(at_release)
