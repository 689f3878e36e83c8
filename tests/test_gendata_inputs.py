"""`ikem-data gendata` on input that must not size the store or pass into it: bogus counts,
values that cannot be stored, ids that do not exist, pipes, names the store cannot hold."""

import os
import re

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import alarm, expected_listed, good_folder, kinect_capture, random_frames, skeleton_text

from ikem_cli.data import main as cli
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.store import open_store

QUIET = dict(workers=1, progress=False, log=lambda m: None)


def _write(folder, name, text):
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.skeleton"
    path.write_text(text)
    return path


def test_a_bogus_frame_count_is_a_file_line_error_and_never_sizes_the_store(tmp_path):
    raw, good = good_folder(tmp_path, (3, 5))
    body = skeleton_text(random_frames(np.random.default_rng(1), 2, 1)).split("\n", 1)[1]
    for header, error in (("1000000000", ":58: unexpected end of file: expected a body count in frame 3 (the header "
                                          "on line 1 says 1000000000 frames, the file holds 2)"),  # ~35 TiB of raw/xyz
                          ("10000000000000000000", ":1: frame count out of range (larger than 2**63 - 1")):  # > int64
        bad = _write(raw, "S001C001P009R001A001", f"{header}\n{body}")
        with pytest.raises(GendataError, match=re.escape(f"{bad}{error}")):
            gendata(raw, tmp_path / "stop.zarr", **QUIET)
        assert not (tmp_path / "stop.zarr").exists()
        out = tmp_path / f"skip{len(header)}.zarr"
        state = gendata(raw, out, on_error="skip", **QUIET)
        assert [f["file"] for f in state["failed"]] == [str(bad)]
        with open_store(out) as store:
            assert store.names() == sorted(good)
            assert store["raw/xyz"].shape == (2, 3, 5, 25, 2) and state["t_max"] == 5


def test_t_max_comes_from_the_samples_stored_not_from_a_skipped_header(tmp_path):
    raw, good = good_folder(tmp_path, (3, 5))
    truncated = skeleton_text(random_frames(np.random.default_rng(2), 50, 1)).splitlines(keepends=True)[:40]
    bad = _write(raw, "S001C001P009R001A001", "".join(truncated))  # says 50 frames, holds 1 and a bit
    out = tmp_path / "s.h5"
    state = gendata(raw, out, on_error="skip", **QUIET)
    assert "end of file" in state["failed"][0]["reason"] and f"{bad}:41" in state["failed"][0]["reason"]
    with open_store(out) as store:
        assert store["raw/xyz"].shape[2] == 5 == store.attrs["gendata"]["t_max"]
        for n, name in enumerate(sorted(good)):
            want = expected_listed(good[name])
            np.testing.assert_array_equal(store["raw/xyz"][n, :, : want.shape[1]], want)


@pytest.mark.parametrize("token", ["1e400", "-1e39"])  # inf in float64; beyond float32
def test_values_that_cannot_be_stored_stop_or_are_skipped(tmp_path, token):
    raw, good = good_folder(tmp_path, (3, 5))
    lines = skeleton_text(random_frames(np.random.default_rng(3), 2, 1)).splitlines(keepends=True)
    lines[6] = f"0.1 {token} 3.0 " + lines[6].split(" ", 3)[3]  # y of joint 3, frame 1
    bad = _write(raw, "S001C001P009R001A001", "".join(lines))
    expected = f"{bad}:7: field 2 (y) is not a finite float32"
    with pytest.raises(GendataError, match=re.escape(expected)):
        gendata(raw, tmp_path / "stop.zarr", **QUIET)
    state = gendata(raw, tmp_path / "skip.zarr", on_error="skip", **QUIET)
    assert expected in state["failed"][0]["reason"]
    with open_store(tmp_path / "skip.zarr") as store:
        assert store.names() == sorted(good) and np.isfinite(store["raw/xyz"][:]).all()


def test_a_body_id_beyond_int64_is_refused(tmp_path):
    raw, _ = good_folder(tmp_path, (3, 5))
    frames = random_frames(np.random.default_rng(4), 2, 1, ids=[18446744073709551617])  # 2**64 + 1
    bad = _write(raw, "S001C001P009R001A001", skeleton_text(frames))
    with pytest.raises(GendataError, match=f"{bad}:3: body ID out of range"):
        gendata(raw, tmp_path / "o.zarr", **QUIET)


@pytest.mark.parametrize("name", ["S001C001P001R001A000", "S001C000P001R001A001", "S001C001P001R000A001"])
def test_an_id_0_in_a_file_name_is_refused_before_anything_is_written(tmp_path, name):
    raw, _ = good_folder(tmp_path, (3, 5))
    _write(raw, name, skeleton_text(random_frames(np.random.default_rng(5), 2, 1)))
    out = tmp_path / "o.zarr"
    result = CliRunner().invoke(cli, ["gendata", "--raw", str(raw), "--out", str(out), "--workers", "1"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{name}.skeleton" in result.output and "0 is not an NTU id (ids are 1-based" in result.output
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_named_like_a_sample_is_refused_not_waited_on(tmp_path):
    raw, _ = good_folder(tmp_path, (3, 5))
    fifo = raw / "S001C001P009R001A001.skeleton"
    os.mkfifo(fifo)
    out = tmp_path / "o.zarr"
    with alarm(20):  # the reader used to block on it forever
        result = CliRunner().invoke(cli, ["gendata", "--raw", str(raw), "--out", str(out), "--workers", "1"])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert f"{fifo} is a named pipe (FIFO); only regular files are read" in result.output
    assert not out.exists()


def test_kinect_non_ascii_name_is_refused_up_front_and_nothing_is_stuck(tmp_path):
    kinect_capture(tmp_path / "clips" / "wave.csv")
    kinect_capture(tmp_path / "clips" / "Gest\u00e9.csv", seed=1)
    table = tmp_path / "labels.csv"
    table.write_text("file,label,split\nclips/wave.csv,0,train\nclips/Gest\u00e9.csv,1,val\n", encoding="utf-8")
    out = tmp_path / "k.zarr"
    with pytest.raises(GendataError, match="labels.csv:3: file name 'clips/Gest\u00e9.csv' is not ASCII.*rename"):
        gendata(None, out, input_format="kinect-csv", labels=table, **QUIET)
    assert not out.exists()
    (tmp_path / "clips" / "Gest\u00e9.csv").rename(tmp_path / "clips" / "geste.csv")  # the way on
    table.write_text("file,label,split\nclips/wave.csv,0,train\nclips/geste.csv,1,val\n")
    state = gendata(None, out, input_format="kinect-csv", labels=table, **QUIET)
    assert state["complete"] and state["n_samples"] == 2


def test_kinect_nan_and_a_capture_listed_twice_are_refused_at_gendata(tmp_path):
    kinect_capture(tmp_path / "clips" / "a.csv")
    bad = kinect_capture(tmp_path / "clips" / "b.csv", seed=1)
    lines = bad.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[1] = "nan"
    lines[1] = ",".join(fields)
    bad.write_text("".join(lines))
    table = tmp_path / "labels.csv"
    table.write_text("file,label,split\nclips/a.csv,0,train\nclips/b.csv,1,val\n")
    with pytest.raises(GendataError, match=r"b.csv:2: field 2 \(x of joint 1, nan\) is not a finite"):
        gendata(None, tmp_path / "stop.zarr", input_format="kinect-csv", labels=table, **QUIET)
    state = gendata(None, tmp_path / "skip.zarr", input_format="kinect-csv", labels=table, on_error="skip", **QUIET)
    assert state["n_samples"] == 1 and "b.csv:2: field 2" in state["failed"][0]["reason"]
    table.write_text("file,label,split\nclips/a.csv,0,train\n./clips/a.csv,0,val\n")  # one clip in train and val
    with pytest.raises(GendataError, match="labels.csv:3: file './clips/a.csv' is the same file as 'clips/a.csv'"):
        gendata(None, tmp_path / "twice.zarr", input_format="kinect-csv", labels=table, **QUIET)
    assert not (tmp_path / "twice.zarr").exists()


def test_memory_stays_within_the_write_budget_for_long_sequences(tmp_path, monkeypatch):
    import tracemalloc

    import ikem_data.gendata.write as gendata_write  # the module that reads the budget

    raw, good = good_folder(tmp_path, (3, 2000, 5, 4))  # one sample of raw/xyz: 1.2 MB
    monkeypatch.setattr(gendata_write, "WRITE_BUFFER_BYTES", 4_000_000)
    gendata(raw, tmp_path / "warm.zarr", **QUIET)  # imports and caches, not measured
    out = tmp_path / "long.zarr"
    tracemalloc.start()
    try:
        gendata(raw, out, **QUIET)  # chunk_size 16, 4 chunks per write: a 77 MB buffer unbounded
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"peak {peak / 1e6:.0f} MB"
    with open_store(out) as store:
        assert store["raw/xyz"].chunks[0] == 3  # samples per chunk cut to fit the budget
        for n, name in enumerate(sorted(good)):
            want = expected_listed(good[name])
            np.testing.assert_array_equal(store["raw/xyz"][n, :, : want.shape[1]], want)
