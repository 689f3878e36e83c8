"""What an unlucky or hostile user can do to stores and run folders: concurrent writers,
self-overwrite, interruptions at the worst moment, a file where a folder should be."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import write_raw_store

from ikem_cli.data import main as ikem_data
from ikem_cli.train import main as ikem_train
from ikem_data.modalities.stage import StageError, build_modalities
from ikem_data.locks import LockedError, exclusive, lock_paths
from ikem_data.store import open_store
from ikem_train.data.datasets import write_synthetic_store
from ikem_train.training.loop import TrainingError, prepare_run_dir

TINY = ["--set", "data.batch_size=4", "--set", "data.num_workers=0", "--set", "model.queue_size=8",
        "--set", "model.hidden_channels=4", "--set", "model.hidden_dim=16", "--set", "model.feature_dim=8",
        "--set", "optim.epochs=1", "--set", "run.progress=false", "--device", "cpu"]


def raw_store(path, n=12, frames=30):
    """A complete raw store of ``n`` one-body random sequences of ``frames`` frames."""
    xyz = np.random.default_rng(0).normal(0, 0.3, size=(n, 3, frames, 25, 1)).astype(np.float32)
    return write_raw_store(path, xyz, [frames] * n, [f"S001C001P001R001A{i + 1:03d}" for i in range(n)])


class Holder:
    """Another process holding ``exclusive(path)`` until killed."""

    def __init__(self, path):
        code = textwrap.dedent(f"""
            import sys, time
            from ikem_data.locks import exclusive
            with exclusive({str(path)!r}, "store"):
                print("held", flush=True)
                time.sleep(120)
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


# -- one writer at a time -------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    store = raw_store(tmp_path / "s.zarr")
    holder = Holder(store)
    try:
        with pytest.raises(LockedError, match=rf"being written by another process \(pid {holder.proc.pid} on "):
            build_modalities(store, progress=False)
        result = CliRunner().invoke(ikem_data, ["modalities", "--out", str(store), "--quiet"])
        assert result.exit_code != 0 and f"pid {holder.proc.pid}" in result.output and "Traceback" not in result.output
        with open_store(store) as s:
            assert "modalities" not in s.attrs  # the refused writer wrote nothing
    finally:
        holder.kill()
    said = []
    with exclusive(store, "store", log=said.append):  # the OS released the dead holder's lock
        pass
    assert said and f"pid {holder.proc.pid}" in said[0] and "gone" in said[0]
    assert not lock_paths(store)[1].exists()  # the holder record goes with a clean release
    build_modalities(store, progress=False, workers=1)


def test_two_runs_cannot_share_a_run_folder(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=12, persons=1)
    run = tmp_path / "run"
    holder = Holder(run)
    try:
        result = CliRunner().invoke(ikem_train, ["pretrain", "--store", str(store), "--benchmark", "ntu60-xsub",
                                                 "--run-dir", str(run), "--modalities", "joint", *TINY])
        assert result.exit_code != 0 and f"run folder {run} is being written" in result.output
        assert not run.exists() or not any(run.iterdir())
    finally:
        holder.kill()


# -- stores are never destroyed or mixed by a request that was not made ----------------------


def test_modalities_from_a_store_into_itself_is_refused_and_loses_nothing(tmp_path):
    store = raw_store(tmp_path / "s.zarr")
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(ikem_data, ["modalities", "--from", str(store), "--out", str(store), *extra])
        assert result.exit_code != 0 and "are the same store" in result.output
    with open_store(store) as s:
        assert s.is_complete("gendata") and s["raw/xyz"].shape[0] == 12


def test_modalities_from_never_replaces_an_unrelated_unfinished_store(tmp_path):
    source = raw_store(tmp_path / "src.zarr")
    other = raw_store(tmp_path / "other.zarr")
    with open_store(other, "r+") as s:  # e.g. an interrupted gendata of something else
        s.attrs["gendata"] = {"complete": False, "params": {"raw": "elsewhere"}}
    with pytest.raises(StageError, match="is not a copy of .*--overwrite"):
        build_modalities(other, source=source, progress=False)
    with open_store(other) as s:
        assert s.attrs["gendata"]["params"] == {"raw": "elsewhere"}
    build_modalities(other, source=source, overwrite=True, progress=False, workers=1)


def test_an_interrupted_store_creation_leaves_nothing_in_the_way(tmp_path, monkeypatch):
    path = tmp_path / "new.zarr"

    def interrupted(*args):
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        open_store(path, "w")
    monkeypatch.undo()
    assert not path.exists()  # only the temporary <name>.creating, which the next creation replaces
    raw_store(path)
    with open_store(path) as s:
        assert s.is_complete("gendata")


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_store_killed_mid_modalities_resumes_where_it_stopped(tmp_path, suffix):
    store = raw_store(tmp_path / f"s{suffix}")
    code = textwrap.dedent(f"""
        import os, signal
        import ikem_data.modalities.stage as bm
        original, calls = bm.compute_modalities, []
        def killed_at_the_third_step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        bm.compute_modalities = killed_at_the_third_step
        bm.build_modalities({str(store)!r}, chunk_size=2, step_chunks=1, progress=False, workers=1)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    with open_store(store) as s:
        assert s.attrs["modalities"]["done"] >= 2 and not s.attrs["modalities"]["complete"]
    status, attrs = build_modalities(store, chunk_size=2, step_chunks=1, progress=False, workers=1)
    assert status == "resumed" and attrs["complete"]


# -- run folders ------------------------------------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=12, persons=1)
    run = tmp_path / "run"
    args = ["pretrain", "--store", str(store), "--benchmark", "ntu60-xsub", "--run-dir", str(run),
            "--modalities", "joint", *TINY]
    assert CliRunner().invoke(ikem_train, args).exit_code == 0
    (run / "last.pt").unlink()  # what a kill -9 in the first epoch leaves: config.yaml, no checkpoint
    for name in run.glob("epoch*.pt"):
        name.unlink()
    fresh = CliRunner().invoke(ikem_train, args)
    assert fresh.exit_code != 0 and "interrupted before its first checkpoint: --resume starts it again" in fresh.output
    resumed = CliRunner().invoke(ikem_train, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "starting it again from epoch 1" in resumed.output and (run / "last.pt").is_file()
    epochs = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 1  # the lost epoch's record is not kept twice


def test_a_run_dir_that_is_a_file_is_a_clear_error(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=12, persons=1)
    (tmp_path / "taken").write_text("not a folder")
    result = CliRunner().invoke(ikem_train, ["pretrain", "--store", str(store), "--benchmark", "ntu60-xsub",
                                             "--run-dir", str(tmp_path / "taken"), "--modalities", "joint", *TINY])
    assert result.exit_code != 0 and "is a file, not a folder" in result.output and "Traceback" not in result.output
    assert (tmp_path / "taken").read_text() == "not a folder"
    with pytest.raises(TrainingError, match="is a file"):
        prepare_run_dir(tmp_path / "taken", resume=True)


# -- store content is checked, not trusted -----------------------------------------------------


def _damage(path, case):
    with open_store(path, "r+") as s:
        n = s["raw/frames"].shape[0]
        if case == "split-past-n":
            s.create_array("splits/ntu60-xsub/val", (2,), np.int64, overwrite=True)[...] = [0, n + 5]
        elif case == "short-labels":
            s.create_array("raw/label", (n - 3,), np.int16, overwrite=True)[...] = 0
        elif case == "float-frames":
            s.create_array("raw/frames", (n,), np.float32, overwrite=True)[...] = 30.5
        elif case == "float-splits":
            s.create_array("splits/ntu60-xsub/train", (3,), np.float64, overwrite=True)[...] = [1.0, 2.5, 3.0]
        elif case == "other-t":
            s.create_array("modalities/joint", (n, 3, 7, 25, 1), np.float32, overwrite=True)[...] = 0.1
        elif case == "negative-label":
            s["raw/label"][0] = -1


@pytest.mark.parametrize("case,expected", [
    ("split-past-n", "splits/ntu60-xsub/val holds index 17 outside [0, 12)"),
    ("short-labels", "raw/label has 9 entries, raw/frames 12"),
    ("float-frames", "raw/frames is float32, not an integer array"),
    ("float-splits", "splits/ntu60-xsub/train is float64, not an integer array"),
    ("other-t", "modalities/joint has shape (12, 3, 7, 25, 1); expected (12, 3, 20, V, M)"),
    ("negative-label", "raw/label holds -1 (sample 0)"),
])
def test_a_damaged_store_is_refused_with_what_is_wrong(tmp_path, case, expected):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=20, persons=1)
    _damage(store, case)
    result = CliRunner().invoke(ikem_train, ["knn", "--store", str(store), "--benchmark", "ntu60-xsub",
                                             "--run-dir", str(tmp_path / "k"), "--random-init", "--modalities",
                                             "joint", *TINY])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "is damaged or was edited by hand" in result.output and expected in result.output, result.output
    assert not (tmp_path / "k").exists()


def test_nan_inside_the_data_is_refused_by_evaluation(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=20, persons=1)
    with open_store(store, "r+") as s:
        train = s.split("ntu60-xsub", "train")
        s["modalities/joint"][int(train[2]), 0, 5, 3, 0] = np.nan
    result = CliRunner().invoke(ikem_train, ["linear", "--store", str(store), "--benchmark", "ntu60-xsub",
                                             "--run-dir", str(tmp_path / "l"), "--random-init", "--modalities",
                                             "joint", "--bn-recalibrate", *TINY])
    assert result.exit_code != 0 and "non-finite frozen features from the joint encoder" in result.output
    assert not (tmp_path / "l" / "results.json").exists()
