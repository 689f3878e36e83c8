"""`ikem-data gendata` / `info` end to end: real NTU files, crafted folders, resume, errors."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from ntu_reader import read_batch, read_xyz
from skeleton_files import assert_same_arrays, expected_listed, random_frames, skeleton_text, store_arrays

from ikem_cli.data import main as cli
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.formats.ntu import XSUB60_TRAIN_SUBJECTS, parse_name
from ikem_data.store import open_store


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def real_zarr(ntu_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "ntu60.zarr"
    result = _run("gendata", "--raw", ntu_dir, "--out", out, "--workers", 2, "--chunk-size", 4, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_real_store_content(real_zarr, ntu_dir):
    xyz, frames, names = read_batch(ntu_dir)
    with open_store(real_zarr) as store:
        state = store.attrs["gendata"]
        assert state["complete"] is True and state["params"]["dataset"] == "ntu60"
        assert store["raw/xyz"].shape == (12, 3, 158, 25, 2) and store["raw/xyz"].dtype == np.float32
        np.testing.assert_array_equal(store["raw/xyz"][:], xyz)
        assert store["raw/frames"][:].tolist() == frames.tolist() and store["raw/frames"].dtype == np.int32
        assert store.names() == names
        ids = [parse_name(n) for n in names]
        assert store["raw/label"][:].tolist() == [i.action - 1 for i in ids]
        for field in ("setup", "camera", "subject", "replication"):
            assert store[f"raw/{field}"][:].tolist() == [getattr(i, field) for i in ids]
            assert store[f"raw/{field}"].dtype == np.int16
        two_person = {"S001C001P001R001A050", "S017C003P020R002A054", "S017C003P020R002A055"}
        assert store["raw/bodies"][:].tolist() == [2 if n in two_person else 1 for n in names]
        assert store.benchmarks() == ["ntu60-xsub", "ntu60-xview"]
        for n, name in enumerate(names):
            sid = parse_name(name)
            assert (n in store.split("ntu60-xsub", "train")) == (sid.subject in XSUB60_TRAIN_SUBJECTS)
            assert (n in store.split("ntu60-xview", "val")) == (sid.camera == 1)


def test_zarr_and_hdf5_equal(real_zarr, ntu_dir, tmp_path):
    h5 = tmp_path / "ntu60.h5"
    gendata(ntu_dir, h5, workers=1, chunk_size=4, progress=False, log=lambda m: None)
    assert_same_arrays(store_arrays(real_zarr), store_arrays(h5))
    with open_store(h5) as store:
        assert store.kind == "hdf5" and store.attrs["gendata"]["complete"] is True


def test_info_reports(real_zarr):
    result = _run("info", real_zarr)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "gendata:   complete" in out and "dataset:   ntu60" in out and "N = 12" in out
    assert "ntu60-xsub   train 9, val 3" in out and "ntu60-xview  train 2, val 10" in out
    assert "max 158" in out and "1: 9, 2: 3" in out and "body_policy=listed" in out
    with open_store(real_zarr, "r+") as store:  # another stage's dict is shown generically
        store.attrs["modalities"] = {"complete": False, "params": {"frames": 50}, "done": 3}
    out = _run("info", real_zarr).output
    assert "modalities: INCOMPLETE" in out and "frames=50" in out and "done: 3" in out
    assert '"modalities"' in _run("info", "--json", real_zarr).output
    result = _run("info", real_zarr.parent / "absent.zarr")
    assert result.exit_code != 0 and "no store at" in result.output and "Traceback" not in result.output


def test_interrupted_run_resumes_to_the_same_store(ntu_dir, real_zarr, tmp_path):
    out = tmp_path / "resume.zarr"
    with pytest.raises(KeyboardInterrupt):
        gendata(ntu_dir, out, workers=1, chunk_size=4, write_chunks=1, progress=False, stop_after_chunks=2,
                log=lambda m: None)
    with open_store(out) as store:
        state = store.attrs["gendata"]
        assert state["complete"] is False and state["written"] == 8 and state["next_file"] == 8
        assert store.benchmarks() == []
    assert "INCOMPLETE" in _run("info", out).output
    result = _run("gendata", "--raw", ntu_dir, "--out", out, "--workers", 1, "--chunk-size", 4, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert_same_arrays(store_arrays(out), store_arrays(real_zarr))
    stamp = (out / "zarr.json").stat().st_mtime_ns
    result = _run("gendata", "--raw", ntu_dir, "--out", out, "--workers", 1, "--chunk-size", 4, "--no-progress")
    assert result.exit_code == 0 and "already complete" in result.output
    assert (out / "zarr.json").stat().st_mtime_ns == stamp


def test_other_arguments_refused_unless_overwrite(ntu_dir, tmp_path):
    out = tmp_path / "s.h5"
    gendata(ntu_dir, out, workers=1, chunk_size=8, progress=False, log=lambda m: None)
    before = out.read_bytes()
    result = _run("gendata", "--raw", ntu_dir, "--out", out, "--chunk-size", 8, "--bodies", "tracked",
                  "--workers", 1, "--no-progress")
    assert result.exit_code != 0 and "other arguments" in result.output and "body_policy" in result.output
    assert "Traceback" not in result.output and out.read_bytes() == before
    result = _run("gendata", "--raw", ntu_dir, "--out", out, "--chunk-size", 8, "--bodies", "tracked",
                  "--workers", 1, "--no-progress", "--overwrite")
    assert result.exit_code == 0, result.output
    with open_store(out) as store:
        assert store.attrs["gendata"]["params"]["body_policy"] == "tracked"
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep")
    result = _run("gendata", "--raw", ntu_dir, "--out", foreign, "--overwrite", "--workers", 1)
    assert result.exit_code != 0 and "not an ikem store" in result.output
    assert (foreign / "a.txt").read_text() == "keep"


def _write(folder, name, frames, **kwargs):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.skeleton").write_text(skeleton_text(frames, **kwargs))


def test_crafted_folder_zero_bodies_many_bodies_long(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    crafted = {
        "S001C001P001R001A001": random_frames(rng, 5, [1, 0, 1, 0, 0]),
        "S001C002P002R001A002": random_frames(rng, 4, [3, 4, 2, 3]),
        "S001C003P004R002A003": random_frames(rng, 321, 1),
        "S001C001P003R001A004": [[], []],
    }
    for name, frames in crafted.items():
        _write(raw, name, frames)
    out = tmp_path / "c.zarr"
    gendata(raw, out, workers=2, chunk_size=2, progress=False, log=lambda m: None)
    with open_store(out) as store:
        names = store.names()
        assert names == sorted(crafted)
        assert store["raw/xyz"].shape == (4, 3, 321, 25, 2)
        for n, name in enumerate(names):
            want = expected_listed(crafted[name])
            got = store["raw/xyz"][n]
            np.testing.assert_array_equal(got[:, : want.shape[1]], want)
            assert not got[:, want.shape[1]:].any()
            assert store["raw/frames"][n] == len(crafted[name])
        assert store["raw/bodies"][:].tolist() == [1, 0, 4, 1]


def test_official_missing_list_and_override(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    _write(raw, "S001C002P005R002A008", random_frames(rng, 3, 1))  # on the official list
    _write(raw, "S001C001P001R001A001", random_frames(rng, 3, 1))
    state = gendata(raw, tmp_path / "a.zarr", workers=1, progress=False, log=lambda m: None)
    assert state["n_samples"] == 1 and state["skipped"] == 1 and state["ignored"] == ["S001C002P005R002A008"]
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("S001C001P001R001A001\n")
    state = gendata(raw, tmp_path / "b.zarr", ignore_list=ignore, workers=1, progress=False, log=lambda m: None)
    assert state["n_samples"] == 1 and state["skipped"] == 1
    with open_store(tmp_path / "b.zarr") as store:
        assert store.names() == ["S001C002P005R002A008"]


def test_ntu120_inferred_with_four_benchmarks(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw"
    for name in ("S001C001P001R001A001", "S018C002P045R001A061", "S019C001P003R002A120"):
        _write(raw, name, random_frames(rng, 2, 1))
    out = tmp_path / "n120.h5"
    state = gendata(raw, out, workers=1, progress=False, log=lambda m: None)
    assert state["dataset"] == "ntu120"
    with open_store(out) as store:
        assert store.benchmarks() == ["ntu120-xset", "ntu120-xsub", "ntu60-xsub", "ntu60-xview"]
        assert store.split("ntu120-xsub", "train").tolist() == [0, 1]
        assert store.split("ntu120-xset", "train").tolist() == [1]
        assert store.split("ntu60-xsub", "train").tolist() == [0]
        assert store["raw/label"][:].tolist() == [0, 60, 119]
    result = _run("gendata", "--raw", raw, "--out", tmp_path / "x.zarr", "--dataset", "ntu60", "--workers", 1)
    assert result.exit_code != 0 and "not in NTU-60" in result.output


def test_malformed_file_stops_resumably_or_is_skipped(tmp_path):
    rng = np.random.default_rng(3)
    raw = tmp_path / "raw"
    good = {f"S001C001P00{k}R001A001": random_frames(rng, 3, 1) for k in range(1, 6)}
    for name, frames in good.items():
        _write(raw, name, frames)
    bad = raw / "S001C001P003R001A001.skeleton"
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text("".join(lines[:10] + ["0.1 0.2 oops 1 1 1 1 0 0 0 0 2\n"] + lines[11:]))
    out = tmp_path / "m.zarr"
    result = _run("gendata", "--raw", raw, "--out", out, "--workers", 1, "--chunk-size", 2, "--no-progress")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{bad}:11: field 3 is not a number" in result.output
    assert "nothing was written" in result.output
    assert not out.exists()  # the check pass found it before the store was created
    bad.write_text("".join(lines))  # fixed: the same command now runs through
    result = _run("gendata", "--raw", raw, "--out", out, "--workers", 1, "--chunk-size", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    with open_store(out) as store:
        assert store.names() == sorted(good)
        np.testing.assert_array_equal(store["raw/xyz"][2], expected_listed(good["S001C001P003R001A001"]))

    bad.write_text("".join(lines[:-3]))  # truncated
    (raw / "S001C001P005R001A001.skeleton").write_text("x\n")  # broken header
    out = tmp_path / "skip.h5"
    result = _run("gendata", "--raw", raw, "--out", out, "--workers", 2, "--chunk-size", 2, "--no-progress",
                  "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "2 files failed" in result.output
    with open_store(out) as store:
        assert store.names() == ["S001C001P001R001A001", "S001C001P002R001A001", "S001C001P004R001A001"]
        assert store["raw/xyz"].shape[0] == 3 and store["raw/label"].shape == (3,)
        failed = {f["file"]: f["reason"] for f in store.attrs["gendata"]["failed"]}
        assert set(failed) == {str(bad), str(raw / "S001C001P005R001A001.skeleton")}
        assert "end of file" in failed[str(bad)] and f"{bad}:" in failed[str(bad)]
    info = _run("info", out).output
    assert "failed files (2)" in info and "end of file" in info and "frame count" in info


def test_bad_inputs_give_one_line_errors(tmp_path):
    out = tmp_path / "o.zarr"
    result = _run("gendata", "--raw", tmp_path / "absent", "--out", out)
    assert result.exit_code != 0 and "does not exist" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("gendata", "--raw", empty, "--out", out)
    assert result.exit_code != 0 and "no .skeleton files" in result.output
    _write(empty, "S001C001P001R001A001", random_frames(np.random.default_rng(4), 2, 1))
    _write(empty, "take_07", random_frames(np.random.default_rng(4), 2, 1))
    result = _run("gendata", "--raw", empty, "--out", out)
    assert result.exit_code != 0 and "take_07.skeleton" in result.output and "SsssCcccPpppRrrrAaaa" in result.output
    assert not out.exists()
    result = _run("gendata", "--input-format", "kinect-csv", "--out", out)
    assert result.exit_code != 0 and "--labels" in result.output
    (empty / "take_07.skeleton").unlink()
    with pytest.raises(GendataError, match="ignore list"):
        gendata(empty, out, ignore_list=tmp_path / "none.txt", progress=False)


def test_real_long_sequence_not_truncated(ntu_dir, tmp_path):
    """A real file repeated past 300 frames (rewritten header) keeps every frame."""
    src = ntu_dir / "S001C001P001R001A002.skeleton"
    text = src.read_text()
    header, body = text.split("\n", 1)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A002.skeleton").write_text(f"{int(header) * 2}\n{body}{body}")
    shutil.copy(ntu_dir / "S001C001P001R001A001.skeleton", raw)
    out = tmp_path / "long.zarr"
    gendata(raw, out, workers=1, progress=False, log=lambda m: None)
    with open_store(out) as store:
        assert store["raw/xyz"].shape[2] == 316 and store["raw/frames"][:].tolist() == [103, 316]
        xyz, _ = read_xyz(raw / "S001C001P001R001A002.skeleton")
        np.testing.assert_array_equal(store["raw/xyz"][1], xyz)
        assert store.attrs["gendata"]["frames_stats"]["over_300"] == 1


def test_sigint_leaves_a_resumable_store(ntu_dir, real_zarr, tmp_path):
    """A real Ctrl-C (SIGINT to the command's process) mid-run, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted(ntu_dir.glob("*.skeleton")):
        (raw / path.name).symlink_to(path)
    out = tmp_path / "sigint.zarr"
    code = ("import sys, time\n"
            "import ikem_data.formats.skeleton as sk\n"
            "real = sk.load_xyz\n"
            "def slow(*a, **k):\n"
            "    time.sleep(0.15)\n"
            "    return real(*a, **k)\n"
            "sk.load_xyz = slow\n"
            "from ikem_cli.data import main\n"
            "sys.argv = ['ikem-data'] + sys.argv[1:]\n"
            "main()\n")
    args = [sys.executable, "-c", code, "gendata", "--raw", str(raw), "--out", str(out), "--workers", "1",
            "--chunk-size", "1", "--no-progress"]  # 4 samples per write
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until the first chunk is on disk
        try:
            with open_store(out) as store:
                if store.attrs["gendata"]["written"] >= 4:
                    break
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130, output
    assert "resumable" in output and "Traceback" not in output
    with open_store(out) as store:
        state = store.attrs["gendata"]
        assert state["complete"] is False and state["written"] in (4, 8)
    result = _run("gendata", "--raw", raw, "--out", out, "--workers", 1, "--chunk-size", 1, "--no-progress")
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert_same_arrays(store_arrays(out), store_arrays(real_zarr))
