"""Issue 22, classes 3, 4, 6, 7 and 9, on a store built from the real NTU files: what a store
holds is checked when it is opened, readers and writers keep out of each other's way, a
rerun looks at content rather than at what was recorded, and a full disk is one line.

Each test damages a copy of the store the way the issue's example did, asserts the exact
one-line error (a command that could block runs in a subprocess with a time limit), and
that nothing in the store changed.
"""

import errno
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ikem_cli.data import main as ikem_data
from ikem_cli.train import main as ikem_train
from ikem_data.gendata.run import gendata
from ikem_data.modalities.stage import build_modalities
from ikem_data.store import StoreError, open_store

TINY = ["--set", "data.batch_size=4", "--set", "data.num_workers=0", "--set", "model.queue_size=8",
        "--set", "model.hidden_channels=4", "--set", "model.hidden_dim=16", "--set", "model.feature_dim=8",
        "--set", "optim.epochs=1", "--set", "run.progress=false", "--device", "cpu"]
#: Seconds a command that must refuse at once may take (a blocked open never returns).
BOUND = 60


def _build(out, ntu_dir):
    gendata(ntu_dir, out, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    build_modalities(out, chunk_size=4, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def built(ntu_dir, tmp_path_factory):
    """The 12 real NTU samples: raw/ and modalities/ in chunks of 4 (3 chunks an array), zarr and HDF5."""
    root = tmp_path_factory.mktemp("stores")
    return {"zarr": _build(root / "ntu.zarr", ntu_dir), "hdf5": _build(root / "ntu.h5", ntu_dir)}


@pytest.fixture
def store(built, tmp_path):
    """A fresh copy of the real zarr store."""
    return shutil.copytree(built["zarr"], tmp_path / "ntu.zarr")


@pytest.fixture
def h5store(built, tmp_path):
    return shutil.copy(built["hdf5"], tmp_path / "ntu.h5")


def snapshot(path):
    """Every entry below ``path`` (or the file itself): ``{name: (type, size, mtime_ns)}`` from lstat."""
    path = str(path)
    if not os.path.isdir(path):
        st = os.lstat(path)
        return {"": (st.st_mode, st.st_size, st.st_mtime_ns)}
    out = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(folder, name)
            st = os.lstat(full)
            out[os.path.relpath(full, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def run_cli(*args, module="ikem_cli.data"):
    """``ikem-data``/``ikem-train`` in a subprocess that may not take more than BOUND seconds."""
    code = f"import sys; from {module} import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=BOUND, env=dict(os.environ, NUMBA_DISABLE_JIT="0"))
    return done.returncode, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def knn(store, run_dir):
    return CliRunner().invoke(ikem_train, ["knn", "--store", str(store), "--benchmark", "ntu60-xsub",
                                           "--run-dir", str(run_dir), "--random-init", "--modalities", "joint",
                                           *TINY])


# -- class 3: files inside a store are checked for what they are --------------------------------------------


def test_a_fifo_in_a_store_or_as_a_store_is_refused_at_once_naming_it(built, store, tmp_path):
    chunk = store / "modalities/joint/c/1/0/0/0/0"
    chunk.unlink()
    os.mkfifo(chunk)
    before = snapshot(store)
    expected = (f"Error: store {store}: modalities/joint/c/1/0/0/0/0 is a named pipe (FIFO); a store holds only "
                "regular files and folders (reading it could block forever); remove it and rebuild it with "
                f"`ikem-data modalities --out {store} --overwrite`")
    assert run_cli("info", store) == (1, expected)
    assert run_cli("modalities", "--out", store, "--no-progress") == (1, expected)
    rc, line = run_cli("pretrain", "--store", store, "--benchmark", "ntu60-xsub", "--run-dir", tmp_path / "run",
                       *TINY, module="ikem_cli.train")
    assert (rc, line) == (1, expected)
    assert snapshot(store) == before and not (tmp_path / "run").exists()

    raw = shutil.copytree(built["zarr"], tmp_path / "raw.zarr")  # a raw chunk: the rebuild is gendata's
    (raw / "raw/xyz/c/0/0/0/0/0").unlink()
    os.mkfifo(raw / "raw/xyz/c/0/0/0/0/0")
    assert run_cli("modalities", "--out", raw, "--overwrite", "--no-progress") == (1, (
        f"Error: store {raw}: raw/xyz/c/0/0/0/0/0 is a named pipe (FIFO); a store holds only regular files and "
        f"folders (reading it could block forever); remove it and rebuild it with `ikem-data gendata ... --out "
        f"{raw} --overwrite`"))

    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    assert run_cli("info", fifo) == (1, f"Error: {fifo}: HDF5 store is a named pipe (FIFO); only regular files "
                                        "are read; an HDF5 store is one regular file")


# -- class 4: store content is checked at open ----------------------------------------------------------------


def test_a_deleted_chunk_is_refused_not_read_as_zeros_and_the_named_remedy_works(store, tmp_path):
    (store / "modalities/joint/c/1/0/0/0/0").unlink()
    before = snapshot(store)
    result = knn(store, tmp_path / "k")
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: store {store} is damaged or was edited by hand: modalities/joint lacks 1 of its 3 chunks "
        f"(c/1/0/0/0/0), which would read as 0.0; rebuild it with `ikem-data modalities --out {store} --overwrite`")
    assert snapshot(store) == before and not (tmp_path / "k").exists()
    status, _ = build_modalities(store, chunk_size=4, workers=1, progress=False, overwrite=True)
    assert status == "written"
    with open_store(store) as s:
        assert (store / "modalities/joint/c/1/0/0/0/0").is_file() and np.abs(s["modalities/joint"][4:8]).sum() > 0


def test_a_store_from_before_every_chunk_was_kept_is_held_to_its_float_arrays(store):
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    del group.attrs["every_chunk_stored"]  # as ikem wrote stores before: all-fill chunks were skipped
    (store / "raw/setup/c/0").unlink()  # e.g. ids of -1 (the fill value) for a format without them
    with open_store(store) as s:
        assert (s["raw/setup"][...] == -1).all()
    (store / "modalities/bone/c/2/0/0/0/0").unlink()
    with pytest.raises(StoreError, match=r"modalities/bone lacks 1 of its 3 chunks \(c/2/0/0/0/0\)"):
        open_store(store)


def test_out_of_range_frames_and_wrong_dtypes_are_refused(built, store, tmp_path):
    with open_store(store, "r+") as s:
        s["raw/frames"][3] = 10**9
        name = s.names(3, 4)[0]
    before = snapshot(store)
    result = CliRunner().invoke(ikem_data, ["modalities", "--out", str(store), "--overwrite", "--no-progress"])
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: store {store} is damaged or was edited by hand: raw/frames[3] = 1000000000 ({name}), outside "
        f"1..158 (the frames raw/xyz holds); rebuild it with `ikem-data gendata ... --out {store} --overwrite`")
    assert snapshot(store) == before

    other = shutil.copytree(built["zarr"], tmp_path / "other.zarr")
    with open_store(other, "r+") as s:
        joint = s["modalities/joint"][...]
        s.create_array("modalities/joint", joint.shape, np.float64, chunks=(4,) + joint.shape[1:],
                       overwrite=True)[...] = joint
    with pytest.raises(StoreError, match=r"^store .*other.zarr is damaged or was edited by hand: modalities/joint is "
                                         r"float64, not float32; rebuild it with `ikem-data modalities"):
        open_store(other)


def test_hdf5_virtual_datasets_and_external_links_are_refused(built, h5store, tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(h5store, "r") as f:
        joint = f["modalities/joint"][...]
    with h5py.File(source, "w") as f:
        f["joint"] = joint
    with h5py.File(h5store, "r+") as f:
        del f["modalities/joint"]
        layout = h5py.VirtualLayout(shape=joint.shape, dtype=joint.dtype)
        layout[...] = h5py.VirtualSource(str(source), "joint", shape=joint.shape)
        f.create_virtual_dataset("modalities/joint", layout, fillvalue=0)
    source.unlink()  # the source is gone: the virtual dataset reads its fill value, zeros
    before = snapshot(h5store)
    result = knn(h5store, tmp_path / "k")
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: store {h5store}: modalities/joint is a virtual dataset (its sources can vanish and read as fill "
        f"values); an ikem store holds plain datasets only, rebuild it with `ikem-data modalities --out {h5store} "
        "--overwrite`")
    assert snapshot(h5store) == before and not (tmp_path / "k").exists()

    linked = tmp_path / "linked.h5"
    shutil.copy(built["hdf5"], linked)
    with h5py.File(linked, "r+") as f:
        del f["raw/label"]
        f["raw/label"] = h5py.ExternalLink(str(tmp_path / "labels.h5"), "label")
    result = CliRunner().invoke(ikem_data, ["info", str(linked)])
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: store {linked}: raw/label is an external link to another file; an ikem store holds plain "
        f"datasets only, rebuild it with `ikem-data gendata ... --out {linked} --overwrite`")


def test_the_writer_keeps_every_chunk_so_a_complete_array_can_be_checked(tmp_path):
    with open_store(tmp_path / "s.zarr", "w") as s:
        s.create_array("raw/zeros", (8,), np.int32, chunks=(4,))[...] = 0  # all fill value: zarr would skip them
    with open_store(tmp_path / "s.zarr", "r+") as s:
        s["raw/zeros"][4:] = 0
    assert sorted(p.name for p in (tmp_path / "s.zarr/raw/zeros/c").iterdir()) == ["0", "1"]


# -- class 9: a full disk or a file-size limit is one line, and the store or run stays resumable --------------


def test_a_full_disk_while_writing_a_zarr_store_is_one_line_and_the_rerun_finishes_it(built, ntu_dir, tmp_path,
                                                                                      monkeypatch):
    import zarr.storage._local as local
    from skeleton_files import assert_same_arrays, store_arrays

    put = local._put

    def full(path, value, exclusive=False):
        if "raw/xyz/c/1" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", full)
    out = tmp_path / "full.zarr"
    result = CliRunner().invoke(ikem_data, ["gendata", "--raw", str(ntu_dir), "--out", str(out), "--workers", "1",
                                            "--chunk-size", "4", "--no-progress"])
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        f"Error: writing store {out} failed: no space left on the device (ENOSPC); the store stays resumable "
        f"(everything written before is kept): free space on the disk holding {tmp_path}, then rerun the same "
        "command")
    with open_store(out) as s:
        assert s.stage("gendata")["complete"] is False and s.stage("gendata")["written"] == 0
    monkeypatch.setattr(local, "_put", put)
    gendata(ntu_dir, out, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    assert_same_arrays(store_arrays(out), store_arrays(built["zarr"]))

    def full_at_the_second_step(path, value, exclusive=False):  # the modalities stage, after one step of 4
        if "modalities/joint/c/1" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", full_at_the_second_step)
    result = CliRunner().invoke(ikem_data, ["modalities", "--out", str(out), "--chunk-size", "4", "--workers", "1",
                                            "--no-progress"])
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: writing store {out} failed: no space left on the device (ENOSPC); the store stays resumable "
        f"(everything written before is kept): free space on the disk holding {tmp_path}, then rerun the same "
        "command")
    monkeypatch.setattr(local, "_put", put)
    assert build_modalities(out, chunk_size=4, workers=1, progress=False)[0] in ("resumed", "written")
    with open_store(out) as s, open_store(built["zarr"]) as ref:
        np.testing.assert_array_equal(s["modalities/joint"][...], ref["modalities/joint"][...])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_file_size_limit_while_writing_hdf5_is_one_line_not_a_segfault(ntu_dir, tmp_path):
    out = tmp_path / "limited.h5"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (300000, resource.RLIM_INFINITY)); "
            "from ikem_cli.data import main; sys.exit(main())")
    args = ["gendata", "--raw", str(ntu_dir), "--out", str(out), "--workers", "1", "--chunk-size", "4", "--no-progress"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 1, done.stderr  # without the room check: RuntimeError, then rc -11 (segfault)
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: writing store {out} failed: it would pass this process's file-size limit of 300000 bytes (EFBIG); "
        "the store stays resumable (everything written before is kept): raise the file-size limit (`ulimit -f`), "
        "then rerun the same command")
    gendata(ntu_dir, out, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    with open_store(out) as s:
        assert s.is_complete("gendata") and s["raw/xyz"].shape[0] == 12


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    import torch

    from ikem_data.files import NoRoomError
    from ikem_train import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"kind": "pretrain", "epoch": 1, "config": {}, "model": {}})
    before = path.read_bytes()

    def full(payload, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(NoRoomError) as err:
        checkpoint.save_checkpoint(path, {"kind": "pretrain", "epoch": 2, "config": {}, "model": {}})
    assert str(err.value) == (
        f"writing checkpoint {path} failed: no space left on the device (ENOSPC); last.pt is left as it was, the run "
        f"stays resumable from its last checkpoint: free space on the disk holding {tmp_path}, then rerun the same "
        "command with --resume")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# -- class 6: a job holds its store: writers are refused while it reads, and a change under it is noticed -----


def test_a_writer_is_refused_while_a_job_reads_the_store(store, tmp_path, monkeypatch):
    from ikem_data.locks import LockedError
    from ikem_train.jobs.frozen import FrozenFeatures

    extract, refused = FrozenFeatures.extract, []

    def extract_while_someone_rewrites(self, log):  # `modalities --overwrite --t-length 40` mid-job
        with pytest.raises(LockedError) as err:
            build_modalities(store, t_length=40, chunk_size=4, workers=1, progress=False, overwrite=True)
        refused.append(str(err.value))
        return extract(self, log)

    monkeypatch.setattr(FrozenFeatures, "extract", extract_while_someone_rewrites)
    before = snapshot(store)
    result = knn(store, tmp_path / "k")
    assert result.exit_code == 0, result.output
    assert refused == [f"store {store} is being read by another process (a training or evaluation job); wait for "
                       "it to finish or stop it, or write to a new store"]
    assert snapshot(store) == before and sorted(p.name for p in store.parent.iterdir()) == ["k", "ntu.zarr"]


def test_a_store_changed_under_a_job_stops_it_before_any_result(store, tmp_path, monkeypatch):
    from ikem_train.jobs.frozen import FrozenFeatures

    extract = FrozenFeatures.extract

    def extract_then_edit(self, log):  # a writer that ignores the lock (an older ikem, a copy, a hand edit)
        out = extract(self, log)
        chunk = store / "modalities/joint/c/0/0/0/0/0"
        os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
        return out

    monkeypatch.setattr(FrozenFeatures, "extract", extract_then_edit)
    result = knn(store, tmp_path / "k")
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: store {store} changed while this job read it (fingerprint ") and line.endswith(
        "); its results would mix old and new data, so none were written: rerun the job once the store is no "
        "longer being written"), line
    assert not (tmp_path / "k" / "results.json").exists()


# -- class 7: skip and resume compare content, not only what was recorded ----------------------------------------


def test_gendata_and_modalities_notice_inputs_changed_in_place(ntu_dir, tmp_path):
    raw = shutil.copytree(ntu_dir, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    gendata(raw, out, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    said = []
    gendata(raw, out, workers=1, chunk_size=4, progress=False, log=said.append)
    assert said == [f"{out} is already complete (12 samples); nothing to do"]
    edited = sorted(raw.iterdir())[5]
    edited.write_bytes(edited.read_bytes().replace(b"\n", b"\r\n", 1))  # same names, other content
    before = snapshot(out)
    with pytest.raises(Exception) as err:
        gendata(raw, out, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    assert str(err.value) == (f"{out} was made with other arguments (an input file changed in place since it was made "
                              "(same names, other sizes or modification times)); use --overwrite to replace it")
    assert snapshot(out) == before

    build_modalities(out, chunk_size=4, workers=1, progress=False)
    assert build_modalities(out, chunk_size=4, workers=1, progress=False)[0] == "unchanged"
    with open_store(out, "r+") as s:  # raw/ rewritten in place (as `gendata --overwrite` would)
        s["raw/xyz"][0:4] = s["raw/xyz"][0:4] * 2
    result = CliRunner().invoke(ikem_data, ["modalities", "--out", str(out), "--chunk-size", "4", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: store {out}: raw/ changed since its modalities were computed (fingerprint ")
    assert result.output.rstrip().endswith("); pass --overwrite to recompute them")
    status, attrs = build_modalities(out, chunk_size=4, workers=1, progress=False, overwrite=True)
    assert status == "written"
    with open_store(out) as s:
        assert attrs["raw_fingerprint"] == s.fingerprint("raw/")


def test_finetune_resume_of_a_finished_run_refuses_a_store_edited_since(store, tmp_path):
    run = tmp_path / "ft"
    args = ["finetune", "--store", str(store), "--benchmark", "ntu60-xsub", "--run-dir", str(run), "--from-scratch",
            "--modalities", "joint", *TINY]
    result = CliRunner().invoke(ikem_train, args)
    assert result.exit_code == 0, result.output
    finished = (run / "results.json").read_bytes()
    with open_store(store, "r+") as s:  # the val samples' joints change
        s["modalities/joint"][0:4] = s["modalities/joint"][0:4] * 0.5
    with open_store(store) as s:
        now = s.fingerprint()
    result = CliRunner().invoke(ikem_train, args + ["--resume"])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: store {store} changed since run {run} was made from it (fingerprint "), line
    assert line.endswith(f" -> {now}): its checkpoints and metrics belong to the old content, so --resume would mix "
                         "the two; start a new run in a new --run-dir")
    assert (run / "results.json").read_bytes() == finished
