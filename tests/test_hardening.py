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


# == issue 22, classes 1, 2, 8, 10: bad values refused by name, in one line, before any work ==

import hashlib  # noqa: E402 (this section's own imports, kept beside it)
import json  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from ikem_data.gendata import GendataError, gendata  # noqa: E402
from ikem_train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from ikem_train.config import ConfigError, load_config  # noqa: E402

REAL_TINY = ["--set", "data.batch_size=4", "--set", "data.num_workers=0", "--set", "model.queue_size=8",
             "--set", "model.hidden_channels=4", "--set", "model.hidden_dim=16", "--set", "model.feature_dim=8",
             "--set", "run.progress=false", "--device", "cpu"]


@pytest.fixture(scope="module")
def real_store(ntu_dir, tmp_path_factory):
    """A complete store (raw and modalities) of the 12 real NTU files."""
    store = tmp_path_factory.mktemp("real") / "ntu.zarr"
    gendata(ntu_dir, store, workers=1, progress=False, log=lambda *a: None)
    build_modalities(store, progress=False, workers=1)
    return store


@pytest.fixture(scope="module")
def real_run(real_store, tmp_path_factory, one_torch_thread):
    """A finished 1-epoch joint pretraining on the real store: (run folder, pretrain arguments)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    args = ["pretrain", "--store", str(real_store), "--benchmark", "ntu60-xsub", "--run-dir", str(run),
            "--modalities", "joint", *REAL_TINY]
    result = CliRunner().invoke(ikem_train, [*args, "--set", "optim.epochs=1"])
    assert result.exit_code == 0, result.output
    return run, args


def _digest(folder):
    """Every file under ``folder`` with the sha256 of its bytes (to show that nothing changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(result, expected):
    """The command failed with exactly ``Error: <expected>`` as its one line of output."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output == f"Error: {expected}\n", result.output


def _nested_aliases(levels=9, width=9):
    """YAML whose last alias expands to width**levels values (the issue's 9 levels of 9)."""
    lines = [f"a0: &a0 [{', '.join(['1'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata:\n  batch_size: *a{levels - 1}\n"


def test_class1_no_message_prints_the_whole_bad_input(real_store, tmp_path):
    config = tmp_path / "aliases.yaml"
    config.write_text(_nested_aliases())
    start = time.perf_counter()
    result = CliRunner().invoke(ikem_train, ["pretrain", "--store", str(real_store), "--benchmark", "ntu60-xsub",
                                             "--config", str(config), "--run-dir", str(tmp_path / "r"),
                                             *REAL_TINY])
    _one_line_error(result, f"{config}, line 1: YAML anchors (&a0) are not allowed in a config; write each value out")
    assert time.perf_counter() - start < 10 and not (tmp_path / "r").exists()
    # a huge value from --set or a checkpoint is quoted, not printed: the line stays short
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.batch_size=[" + ",".join(["7"] * 10_000) + "]"])
    assert str(err.value) == "data.batch_size: expected an integer, got [7, 7, 7, 7, ...] (list)"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["run.device=" + "x" * 100_000])
    assert len(str(err.value)) < 150 and "..." in str(err.value)
    # the pyskl reader: a label nested 200 000 deep was a RecursionError while printing it
    ann = dict(frame_dir="S001C001P001R001A001", label="LABEL", total_frames=3, keypoint=None)
    data = pickle.dumps(dict(split={"xsub_train": ["S001C001P001R001A001"]}, annotations=[ann]), protocol=2)
    depth = 200_000  # protocol-2 opcodes: `depth` empty lists, each appended into the one below it
    deep = tmp_path / "deep.pkl"
    deep.write_bytes(data.replace(b"X\x05\x00\x00\x00LABEL", b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(GendataError) as err:
        gendata(deep, tmp_path / "deep.zarr", input_format="pyskl", workers=1, progress=False, log=lambda m: None)
    assert str(err.value) == (f"{deep}: no usable annotation; first problem: {deep}: annotation 0 "
                              "(S001C001P001R001A001): label and total_frames must be integers (got [[[[...]]]], 3)")
    assert not (tmp_path / "deep.zarr").exists()
    # the NW-UCLA JSON reader: the decoder itself recursed
    from ikem_data.formats.folder import InputFileError
    from ikem_data.formats.nwucla import read_sequence

    (tmp_path / "a01_s01_e01_v01.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(InputFileError) as err:
        read_sequence(tmp_path / "a01_s01_e01_v01.json")
    assert str(err.value) == (f"{tmp_path / 'a01_s01_e01_v01.json'}: not a sequence file: its JSON is nested too "
                              "deep to read")


@pytest.mark.parametrize("text,expected", [
    ("optim:\n  lr: 0.2\noptim:\n  epochs: 3\n", "{f}, line 3: duplicate key 'optim' (first at line 1); each key may "
                                                 "appear once"),
    ("optim:\n  lr: 0.2\n  lr: 0.3\n", "{f}, line 3: duplicate key 'lr' (first at line 2); each key may appear once"),
    ("data:\n  batch_size: true\n", "data.batch_size: expected an integer, got true (bool)"),
    ("data:\n  batch_size: 4.0\n", "data.batch_size: expected an integer, got 4.0 (float)"),
    (f"data:\n  seed: {2 ** 70}\n", f"data.seed: {2 ** 70} does not fit in a 64-bit integer"),
    ("data:\n  seed: -1\n", "data.seed: Input should be greater than or equal to 0 (got -1)"),
    (f"data:\n  seed: {2 ** 32}\n", f"data.seed: Input should be less than or equal to {2 ** 32 - 1} (got {2 ** 32})"),
    ("optim:\n  lr: 1e39\n", "optim.lr: 1e+39 is outside the float32 range (magnitude at most 3.403e+38)"),
    ("optim:\n  lr: .nan\n", "optim.lr: nan is not a finite number"),
    ("run:\n  dist_timeout: 1e30\n", "run.dist_timeout: Input should be less than or equal to 1000000000 (got 1e+30)"),
    ("model:\n  mlp: 1\n", "model.mlp: expected true or false, got 1 (int)"),
    ("optim:\n  milestones: [10, yes]\n", "optim.milestones[1]: expected an integer, got true (bool)"),
    ("model:\n  modalities: [1]\n", "model.modalities: expected modality names: a list or a comma-separated string "
                                     "(got [1])"),
    ("data:\n  seed: !!int 3\n", "{f}, line 2: YAML tags (tag:yaml.org,2002:int) are not allowed in a config; "
                                 "write plain values"),
    ("optim:\n  <<: {lr: 0.2}\n", "{f}, line 2: YAML merge keys (<<) are not allowed in a config"),
])
def test_class2_yaml_is_read_strictly_and_every_error_names_the_key(real_store, tmp_path, text, expected):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    short = ["--set", "optim.epochs=1", "--set", "run.max_steps_per_epoch=1", "--device", "cpu"]  # if it ran
    result = CliRunner().invoke(ikem_train, ["pretrain", "--store", str(real_store), "--benchmark", "ntu60-xsub",
                                             "--config", str(config), "--run-dir", str(tmp_path / "r"), *short])
    _one_line_error(result, expected.format(f=config))
    assert not (tmp_path / "r").exists()


def test_class2_one_validation_for_files_set_and_checkpoints(real_run, tmp_path):
    assert load_config(None, ["optim.lr=1e-3", "optim.weight_decay=2E-4"]).optim.weight_decay == 2e-4  # YAML 1.2
    for item, expected in [("data.batch_size=true", "data.batch_size: expected an integer, got true (bool)"),
                           (f"data.seed={2 ** 70}", f"data.seed: {2 ** 70} does not fit in a 64-bit integer"),
                           ("data.seed=&a 3", "--set 'data.seed=&a 3', line 1: YAML anchors (&a) are not allowed in "
                                              "a config; write each value out")]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [item])
        assert str(err.value) == expected
    run, _ = real_run
    payload = load_checkpoint(run / "last.pt")
    payload["config"]["data"]["batch_size"] = True
    save_checkpoint(tmp_path / "edited.pt", payload)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "edited.pt")
    assert str(err.value) == (f"checkpoint {tmp_path / 'edited.pt'}: entry 'config': data.batch_size: expected an "
                              "integer, got true (bool); it was edited or damaged: use a checkpoint as ikem wrote it")


def _edit(payload, case):
    if case == "epoch-string":
        payload["epoch"] = "two"
    elif case == "epoch-negative":
        payload["epoch"] = -1
    elif case == "config-lr":
        payload["config"]["optim"]["lr"] = 1e308
    elif case == "optimizer-lr":
        payload["optimizer"]["param_groups"][0]["lr"] = 1e308
    elif case == "no-rng":
        del payload["rng"]
    elif case == "config-not-a-dict":
        payload["config"] = [1, 2]


@pytest.mark.parametrize("case,expected", [
    ("epoch-string", "entry 'epoch' must be an integer >= 0, not 'two' (str)"),
    ("epoch-negative", "entry 'epoch' must be an integer >= 0, not -1 (int)"),
    ("config-lr", "entry 'config': optim.lr: 1e+308 is outside the float32 range (magnitude at most 3.403e+38)"),
    ("optimizer-lr", "entry 'optimizer': param_groups[0].lr is 1e+308, not a finite float32 number"),
    ("no-rng", "entry 'rng' must hold python, numpy and torch random states (got None)"),
    ("config-not-a-dict", "entry 'config' must be a mapping of config sections, not [1, 2]"),
])
def test_class8_a_checkpoint_is_validated_before_a_resume(real_run, tmp_path, case, expected):
    source, args = real_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    _edit(payload, case)
    save_checkpoint(run / "last.pt", payload)
    before = _digest(run)
    result = CliRunner().invoke(ikem_train, [*args[:5], "--run-dir", str(run), *args[7:], "--set", "optim.epochs=2",
                                             "--resume"])
    _one_line_error(result, f"checkpoint {run / 'last.pt'}: {expected}; it was edited or damaged: use a checkpoint "
                            "as ikem wrote it")
    assert _digest(run) == before  # nothing written: no epoch 2, metrics.jsonl as it was


def test_class8_outputs_are_checked_before_the_work(real_store, real_run, tmp_path):
    (tmp_path / "taken.gif").mkdir()
    (tmp_path / "map.png").mkdir()
    (tmp_path / "file").write_text("mine")
    start = time.perf_counter()
    for out in ["taken.gif", "file/a.gif"]:
        result = CliRunner().invoke(ikem_data, ["show", str(real_store), "--sample", "0", "--out",
                                                str(tmp_path / out)])
        expected = (f"--out {tmp_path / out} is a folder, not a file that can be written" if out == "taken.gif"
                    else f"--out {tmp_path / out}: {tmp_path / 'file'} is a file, not a folder")
        _one_line_error(result, expected)
    run, _ = real_run
    result = CliRunner().invoke(ikem_train, ["embed", "--store", str(real_store), "--benchmark", "ntu60-xsub",
                                             "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "map.png"),
                                             "--device", "cpu"])
    _one_line_error(result, f"--out {tmp_path / 'map.png'} is a folder, not a file that can be written")
    plotted = tmp_path / "plotted"
    shutil.copytree(run, plotted)
    (plotted / "curves.png").mkdir()
    before = _digest(plotted)
    result = CliRunner().invoke(ikem_train, ["plot", str(plotted)])
    _one_line_error(result, f"plot's output {plotted / 'curves.png'} is a folder, not a file that can be written")
    assert _digest(plotted) == before and sorted(p.name for p in plotted.iterdir()) == sorted(
        [p.name for p in run.iterdir()] + ["curves.png"])
    shutil.rmtree(plotted)
    assert time.perf_counter() - start < 10  # refused before rendering (which took 12-24 s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "map.png", "taken.gif"]
    assert not any((tmp_path / "taken.gif").iterdir()) and not any((tmp_path / "map.png").iterdir())


def test_class10_messages_say_what_is_true(real_store, real_run, tmp_path, monkeypatch):
    import ikem_train.training.loop as loop

    # Ctrl-C in epoch 1 promised "the last finished epoch's checkpoint", which does not exist yet
    run = tmp_path / "r"
    args = ["pretrain", "--store", str(real_store), "--benchmark", "ntu60-xsub", "--run-dir", str(run),
            "--modalities", "joint", *REAL_TINY, "--set", "optim.epochs=2"]

    def interrupted(self, out):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop.LossMeter, "add", interrupted)  # at the first step of epoch 1
        result = CliRunner().invoke(ikem_train, args)
    assert result.exit_code == 130 and (run / "config.yaml").is_file() and not (run / "last.pt").exists()
    assert result.output.endswith("\ninterrupted: no epoch had finished, so there is no checkpoint yet; rerun the "
                                  "same command with --resume to start it again from epoch 1\n"), result.output
    # the FIFO given as a config was "config file not found" (and must not block)
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    from skeleton_files import alarm

    with alarm(10), pytest.raises(ConfigError) as err:
        load_config(fifo)
    assert str(err.value) == f"{fifo}: config file is a named pipe (FIFO); only regular files are read"
    # "has no a complete modalities stage"
    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(real_store, unfinished)
    with open_store(unfinished, "r+") as s:
        s.attrs["modalities"] = {**s.attrs["modalities"], "complete": False}
    result = CliRunner().invoke(ikem_train, ["knn", "--store", str(unfinished), "--benchmark", "ntu60-xsub",
                                             "--run-dir", str(tmp_path / "k"), "--random-init", *REAL_TINY])
    _one_line_error(result, f"store {unfinished} has an unfinished modalities stage; run `ikem-data modalities "
                            f"--out {unfinished}` first")
    # "Error: rng" / "Error: fused": a bare KeyError is a bug ikem did not check for; it keeps its traceback
    source, _ = real_run
    payload = load_checkpoint(source / "last.pt")
    del payload["rng"]
    save_checkpoint(tmp_path / "no_rng.pt", payload)
    with pytest.raises(CheckpointError, match=r"entry 'rng' must hold python, numpy and torch random states"):
        load_checkpoint(tmp_path / "no_rng.pt", resume=True)
    from ikem_cli.train_commands import friendly_errors

    with pytest.raises(KeyError, match="rng"):
        friendly_errors(lambda: {}["rng"])()
    np.savez(tmp_path / "scores.npz", fused=np.zeros((2, 3), np.float32), label=np.zeros(2, np.int64))
    result = CliRunner().invoke(ikem_train, ["fuse", str(tmp_path)])
    _one_line_error(result, f"{tmp_path / 'scores.npz'} lacks name: not a linear evaluation's scores")


def test_class8_metrics_lines_of_any_shape_are_skipped_not_tracebacks(real_run, tmp_path):
    source, args = real_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    odd = ["[" * 100_000 + "]" * 100_000, '{"epoch": "two", "loss": 1}', "not json", "[1, 2]"]
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("".join(line + "\n" for line in odd))
    result = CliRunner().invoke(ikem_train, ["plot", str(run)])  # a RecursionError in the JSON decoder
    assert result.exit_code == 0 and result.output.startswith(f"{run / 'curves.png'}: "), result.output
    result = CliRunner().invoke(ikem_train, [*args[:5], "--run-dir", str(run), *args[7:], "--set", "optim.epochs=2",
                                             "--resume"])  # keeping the records up to epoch 1 read every line
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[1:5] == odd and [json.loads(line)["epoch"] for line in (lines[0], lines[5])] == [1, 2]


def test_class10_a_checkpoint_that_is_a_pipe_or_folder_is_named_so(tmp_path):
    os.mkfifo(tmp_path / "last.pt")
    (tmp_path / "dir.pt").mkdir()
    from skeleton_files import alarm

    with alarm(10):
        for name, what in [("last.pt", "a named pipe (FIFO)"), ("dir.pt", "a folder")]:
            with pytest.raises(CheckpointError) as err:
                load_checkpoint(tmp_path / name)
            assert str(err.value) == f"checkpoint {tmp_path / name} is {what}; give a .pt file ikem wrote"
