"""`ikem-data gendata` after the worst moments: interrupted anywhere, stopped by a bad file,
killed with its workers running; and what it says when a store cannot be trained on."""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import assert_same_arrays, expected_listed, good_folder, kinect_capture, store_arrays

import ikem_data.gendata.write as gendata_write
from ikem_cli.data import main as cli
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.store import Attributes, Store, open_store

QUIET = dict(workers=1, progress=False, log=lambda m: None)


class Killed(Exception):
    """Stands for the process dying at that point."""


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_an_interruption_at_any_step_is_continued_by_the_same_command(tmp_path, suffix, monkeypatch):
    """Interrupt at the k-th metadata step (attribute write, array creation or resize, the
    rename into place), for every k, then rerun: the same command must finish the store
    as an uninterrupted run makes it, and --overwrite with other arguments must replace it."""
    raw, _ = good_folder(tmp_path, (3, 4, 2))
    args = dict(chunk_size=1, write_chunks=1, **QUIET)
    gendata(raw, tmp_path / f"ref{suffix}", **args)
    reference = store_arrays(tmp_path / f"ref{suffix}")
    steps = {"count": 0, "at": None}

    def step(real):
        def wrapped(*a, **k):
            steps["count"] += 1
            if steps["count"] == steps["at"]:
                raise Killed
            return real(*a, **k)
        return wrapped

    class OsProxy:  # os.replace counted in gendata_write only (the new store renamed into place)
        def __getattr__(self, name):
            return step(os.replace) if name == "replace" else getattr(os, name)

    interrupted = 0
    for at in range(1, 200):
        out = tmp_path / f"k{at}{suffix}"
        steps.update(count=0, at=at)
        with monkeypatch.context() as patch:
            for owner, name in ((Attributes, "__setitem__"), (Store, "create_array"), (Store, "resize")):
                patch.setattr(owner, name, step(getattr(owner, name)))
            patch.setattr(gendata_write, "os", OsProxy())
            try:
                gendata(raw, out, **args)
            except Killed:
                interrupted += 1
            else:
                break
        twin = tmp_path / f"k{at}-twin{suffix}"
        if out.exists():
            (shutil.copytree if out.is_dir() else shutil.copy)(out, twin)
        gendata(raw, out, **args)  # the same command again
        assert_same_arrays(store_arrays(out), reference)
        assert not list(tmp_path.glob("*ikem-partial*"))
        gendata(raw, twin, overwrite=True, **dict(args, chunk_size=2))  # or replaced with other arguments
        assert_same_arrays(store_arrays(twin), reference)
    assert interrupted >= 15  # every step of creation, writes and finish was tried


def test_states_left_by_older_versions_or_a_kill_are_continued_or_replaced(tmp_path):
    import zarr

    raw, _ = good_folder(tmp_path, (3, 4))
    gendata(raw, tmp_path / "ref.zarr", **QUIET)
    reference = store_arrays(tmp_path / "ref.zarr")

    blank = tmp_path / "blank.zarr"  # killed right after the group's first metadata write
    zarr.open_group(str(blank), mode="w", zarr_format=3)
    half = tmp_path / "half.zarr"  # ... or after the first attribute
    zarr.open_group(str(half), mode="w", zarr_format=3).attrs["format"] = "ikem-store"
    bare = tmp_path / "bare.zarr"  # ... or before the gendata stage was recorded
    open_store(bare, "w").close()
    empty = tmp_path / "empty.h5"  # an HDF5 file killed before its first flush
    empty.write_bytes(b"")
    for out in (blank, half, bare, empty):
        gendata(raw, out, **QUIET)
        assert_same_arrays(store_arrays(out), reference)

    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(GendataError, match="damaged.h5 is a store that cannot be opened .*--overwrite"):
        gendata(raw, damaged, **QUIET)
    gendata(raw, damaged, overwrite=True, **QUIET)
    assert_same_arrays(store_arrays(damaged), reference)

    notes = tmp_path / "notes.zarr"  # a folder that is not ours stays refused, --overwrite or not
    notes.mkdir()
    (notes / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"mine": 1}}')
    with pytest.raises(GendataError, match="not an ikem store"):
        gendata(raw, notes, overwrite=True, **QUIET)
    assert "mine" in (notes / "zarr.json").read_text()


def _stopped(root, phase):
    """A folder whose third file (the longest) is malformed, and a store stopped on it.

    phase "check": found by the check pass (nothing written); "write": the file broke
    after the store was started (found by the write pass; the store holds 2 samples).
    """
    raw, good = good_folder(root, (3, 4, 9, 5))
    bad = raw / "S001C001P003R001A001.skeleton"
    out = root / "s.zarr"
    args = ["gendata", "--raw", str(raw), "--out", str(out), "--workers", "1", "--chunk-size", "1", "--no-progress"]
    if phase == "write":
        with pytest.raises(KeyboardInterrupt):
            gendata(raw, out, chunk_size=1, write_chunks=1, stop_after_chunks=1, **QUIET)
    text = bad.read_text()
    lines = text.splitlines(keepends=True)
    lines[4] = lines[4].rsplit(" ", 1)[0] + " x\n"  # the second joint line of frame 1: field 12
    bad.write_text("".join(lines))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{bad}:5: field 12 is not a number" in result.output
    if phase == "check":
        assert "(nothing was written: fix or remove the file and rerun, or rerun with --on-error skip" in result.output
        assert not out.exists()
    else:
        assert ("(the store is resumable: fix or remove the file and rerun the same command, or rerun with "
                "--on-error skip to record it and go on)") in result.output
        with open_store(out) as store:
            assert store.attrs["gendata"]["written"] == 2 and store.attrs["gendata"]["next_file"] == 2
    return raw, good, bad, text, out, args


@pytest.mark.parametrize("phase", ["check", "write"])
@pytest.mark.parametrize("remedy", ["fix", "remove", "skip"])
def test_each_remedy_the_stop_message_offers_works(tmp_path, phase, remedy):
    raw, good, bad, text, out, args = _stopped(tmp_path, phase)
    if remedy == "fix":
        bad.write_text(text)
    elif remedy == "remove":
        bad.unlink()
    result = CliRunner().invoke(cli, args + (["--on-error", "skip"] if remedy == "skip" else []))
    assert result.exit_code == 0, result.output
    kept = sorted(good) if remedy == "fix" else [n for n in sorted(good) if n != bad.stem]
    with open_store(out) as store:
        state = store.attrs["gendata"]
        assert state["complete"] and store.names() == kept
        assert [f["file"] for f in state["failed"]] == ([str(bad)] if remedy == "skip" else [])
        t_max = max(len(good[name]) for name in kept)  # the broken file was the longest: T_max shrinks
        assert store["raw/xyz"].shape[2] == t_max == state["t_max"]
        for n, name in enumerate(kept):
            want = expected_listed(good[name])
            np.testing.assert_array_equal(store["raw/xyz"][n, :, : want.shape[1]], want)
    result = CliRunner().invoke(cli, args)  # the original command now finds it complete
    assert result.exit_code == 0 and "already complete" in result.output, result.output


def test_kinect_labels_without_split_say_the_store_has_no_benchmark(tmp_path):
    kinect_capture(tmp_path / "a.csv", seed=1)
    kinect_capture(tmp_path / "b.csv", seed=2)
    table = tmp_path / "labels.csv"
    table.write_text("file,label\na.csv,0\nb.csv,1\n")
    out = tmp_path / "k.zarr"
    result = CliRunner().invoke(cli, ["gendata", "--input-format", "kinect-csv", "--labels", str(table),
                                      "--out", str(out), "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    note = "has no split column, so the store has no benchmark (splits/) and training needs one: add a split column"
    assert note in result.output and "--overwrite" in result.output
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "splits:    none" in info and note in info
    table.write_text("file,label,split\na.csv,0,train\nb.csv,1,val\n")  # the way on the note gives
    result = CliRunner().invoke(cli, ["gendata", "--input-format", "kinect-csv", "--labels", str(table),
                                      "--out", str(out), "--workers", "1", "--no-progress", "--overwrite"])
    assert result.exit_code == 0 and "no split column" not in result.output, result.output
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "custom       train 1, val 1" in info and "splits:    none" not in info


def _children(pid):
    """Pids of the live children of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited; its new parent may never reap it


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc (Linux)")
def test_parser_workers_exit_when_gendata_is_killed(tmp_path):
    raw, _ = good_folder(tmp_path, (3, 4, 2, 5, 3, 4))
    out = tmp_path / "k.zarr"
    # The parent pauses after its first write, with the worker pool up, and is then killed.
    code = ("import sys, time\n"
            "import ikem_data.gendata.write as gd\n"
            "real = gd._save_state\n"
            "def pause(store, state):\n"
            "    real(store, state)\n"
            "    if state['written']:\n"
            "        print('READY', flush=True)\n"
            "        time.sleep(120)\n"
            "gd._save_state = pause\n"
            "from ikem_cli.data import main\n"
            "sys.argv = ['ikem-data'] + sys.argv[1:]\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "gendata", "--raw", str(raw), "--out", str(out),
                             "--workers", "2", "--chunk-size", "1", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = []
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] and None, daemon=True).start()
        seen = []
        while not seen or seen[-1].strip() != "READY":
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                pytest.fail("gendata did not reach its first write:\n" + "".join(seen))
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the two parsers (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:  # only the processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    with open_store(out) as store:  # and the store it left is resumable
        assert store.attrs["gendata"]["written"] >= 1
    assert gendata(raw, out, chunk_size=1, **QUIET)["complete"]


def test_a_second_writer_of_the_same_store_is_refused_and_its_partial_left_alone(tmp_path):
    from ikem_data.locks import exclusive

    raw, _ = good_folder(tmp_path, (3, 4))
    out = tmp_path / "s.zarr"
    partial = tmp_path / "s.ikem-partial.zarr"
    with exclusive(out, "store"):  # another gendata, busy creating the store
        partial.mkdir()
        with pytest.raises(GendataError, match="s.zarr is being written by another process"):
            gendata(raw, out, **QUIET)
        assert partial.is_dir() and not out.exists()
    partial.rmdir()
    assert gendata(raw, out, **QUIET)["complete"]
