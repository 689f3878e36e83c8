"""Kinect v2 CSV input: the reader on the real MIT captures, labels tables, gendata kinect-csv."""

import csv
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import kinect_capture

from ikem_cli.data import main as cli
from ikem_data.formats.kinect_csv import KinectFormatError, count_frames, read_kinect_csv, read_labels_csv
from ikem_data.store import open_store

FRAMES = {"Ges01_wavehand.csv": 154, "Ges02_balancinghands.csv": 161, "Ges03_drawlines.csv": 213,
          "Ges04_comehere.csv": 172, "KinectReader_joints.csv": 371}


def _plain(path):
    """Obviously-correct reader: csv module, floats, (x, y, z, state) groups after the timestamp."""
    rows = [r for r in csv.reader(open(path)) if r]
    values = np.array([[float(v) for v in r[1:101]] for r in rows]).reshape(len(rows), 25, 4)
    return values[..., :3].transpose(2, 0, 1).astype(np.float32), values[..., 3].astype(np.int8)


def test_real_captures(kinect_dir):
    for name, frames in FRAMES.items():
        xyz, tracking, stamps = read_kinect_csv(kinect_dir / name, return_timestamps=True)
        assert xyz.shape == (3, frames, 25) and xyz.dtype == np.float32
        assert tracking.shape == (frames, 25) and tracking.dtype == np.int8
        assert count_frames(kinect_dir / name) == frames
        want_xyz, want_tracking = _plain(kinect_dir / name)
        np.testing.assert_array_equal(xyz, want_xyz)
        np.testing.assert_array_equal(tracking, want_tracking)
        assert set(np.unique(tracking)) <= {0, 1, 2}
        gaps = np.diff(stamps)
        assert (gaps > 0).all()
    # KinectReader session: close to the sensor, a third of the joints only inferred
    xyz, tracking = read_kinect_csv(kinect_dir / "KinectReader_joints.csv")
    assert 0.7 < np.median(xyz[2]) < 1.5 and 0.2 < (tracking == 1).mean() < 0.5


def test_dropped_frames_show_in_timestamps(kinect_dir):
    stamps = np.concatenate([np.diff(read_kinect_csv(kinect_dir / n, return_timestamps=True)[2]) for n in FRAMES])
    typical = np.median(stamps)
    assert 300_000 < typical < 360_000  # ~33 ms in 100-ns ticks
    assert (stamps > 1.7 * typical).any()  # some ~67 ms gaps (dropped frames)


def test_malformed_csv(tmp_path, kinect_dir):
    lines = (kinect_dir / "Ges01_wavehand.csv").read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines[:3] + [lines[3].replace(",", ",x", 1)] + lines[4:]))
    with pytest.raises(KinectFormatError, match=r"bad.csv:4: field 2 .* is not a number"):
        read_kinect_csv(bad)
    bad.write_text("".join(lines[:5] + [",".join(lines[5].rstrip(",\n").split(",")[:-4]) + "\n"]))
    with pytest.raises(KinectFormatError, match=r"bad.csv:6: expected 101 .* found 97"):
        read_kinect_csv(bad)
    bad.write_text("\n")
    with pytest.raises(KinectFormatError, match="no frames"):
        read_kinect_csv(bad)


def test_labels_csv_errors(tmp_path, kinect_dir):
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nGes01_wavehand.csv,0\n")
    rows = read_labels_csv(table, kinect_dir)
    assert rows[0].path == kinect_dir / "Ges01_wavehand.csv" and rows[0].label == 0 and rows[0].split is None
    for text, message in (("name,label\nx,0\n", "header"), ("file,label\nGes01_wavehand.csv,one\n", "0-based int"),
                          ("file,label\nGes01_wavehand.csv,-2\n", "0-based int"),
                          ("file,label,split\nGes01_wavehand.csv,0,test\n", "train or val"),
                          ("file,label\nGes01_wavehand.csv,0\nGes01_wavehand.csv,1\n", "listed twice")):
        table.write_text(text)
        with pytest.raises(KinectFormatError, match=message):
            read_labels_csv(table, kinect_dir)
    table.write_text("file,label\nnowhere.csv,0\n")
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_labels_csv(table, kinect_dir)


def test_gendata_kinect_csv(tmp_path, kinect_dir):
    table = tmp_path / "labels.csv"
    names = list(FRAMES)
    table.write_text("file,label,split\n" + "".join(
        f"{n},{k},{'train' if k % 2 == 0 else 'val'}\n" for k, n in enumerate(names)))
    for out in (tmp_path / "k.zarr", tmp_path / "k.h5"):
        result = CliRunner().invoke(cli, ["gendata", "--input-format", "kinect-csv", "--raw", str(kinect_dir),
                                          "--labels", str(table), "--out", str(out), "--workers", "1",
                                          "--chunk-size", "2", "--no-progress"])
        assert result.exit_code == 0, result.output
        with open_store(out) as store:
            assert store.names() == names
            assert store["raw/xyz"].shape == (5, 3, 371, 25, 2)
            for k, name in enumerate(names):
                xyz, _ = read_kinect_csv(kinect_dir / name)
                np.testing.assert_array_equal(store["raw/xyz"][k, :, : FRAMES[name], :, 0], xyz)
            assert not store["raw/xyz"][:, :, :, :, 1].any()
            assert store["raw/frames"][:].tolist() == list(FRAMES.values())
            assert store["raw/label"][:].tolist() == [0, 1, 2, 3, 4]
            assert store["raw/subject"][:].tolist() == [-1] * 5 and store["raw/bodies"][:].tolist() == [1] * 5
            assert store.benchmarks() == ["custom"]
            assert store.split("custom", "train").tolist() == [0, 2, 4]
            assert store.split("custom", "val").tolist() == [1, 3]
            assert store.attrs["gendata"]["params"]["dataset"] == "kinect"
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "k.zarr")]).output
    assert "custom       train 3, val 2" in info and "kinect-csv" in info


def test_gendata_kinect_without_split_writes_no_splits(tmp_path, kinect_dir):
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nGes02_balancinghands.csv,1\nGes04_comehere.csv,3\n")
    out = tmp_path / "k.zarr"
    result = CliRunner().invoke(cli, ["gendata", "--input-format", "kinect-csv", "--raw", str(kinect_dir),
                                      "--labels", str(table), "--out", str(out), "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    with open_store(out) as store:
        assert store.benchmarks() == [] and store["raw/xyz"].shape == (2, 3, 172, 25, 2)


def test_values_that_cannot_be_stored_are_refused(tmp_path):
    path = kinect_capture(tmp_path / "c.csv")
    lines = path.read_text().splitlines(keepends=True)
    for k, (token, message) in enumerate((("nan", "field 7 .*y of joint 2.* not a finite float32"),
                                          ("inf", "field 7 .*not a finite"), ("1e400", "field 7 .*not a finite"),
                                          ("-1e39", "field 7 .*not a finite"))):
        fields = lines[1].split(",")
        fields[6] = token  # y of joint 2
        path.write_text("".join(lines[:1] + [",".join(fields)] + lines[2:]))
        with pytest.raises(KinectFormatError, match=r"c.csv:2: " + message):
            read_kinect_csv(path)
    fields = lines[2].split(",")
    fields[4] = "7"  # tracking state of joint 1
    path.write_text("".join(lines[:2] + [",".join(fields)]))
    with pytest.raises(KinectFormatError, match=r"c.csv:3: field 5 \(tracking state of joint 1\) is 7; expected 0, 1"):
        read_kinect_csv(path)
    path.write_text("".join(["99999999999999999999" + lines[0][lines[0].index(","):]] + lines[1:]))
    with pytest.raises(KinectFormatError, match=r"c.csv:1: field 1 .*int64"):
        read_kinect_csv(path)


def test_one_capture_listed_twice_under_other_spellings_is_refused(tmp_path):
    kinect_capture(tmp_path / "clips" / "a.csv")
    kinect_capture(tmp_path / "clips" / "b.csv", seed=1)
    (tmp_path / "alias.csv").symlink_to(tmp_path / "clips" / "a.csv")
    table = tmp_path / "labels.csv"
    for other in ("./clips/a.csv", "clips//a.csv", "alias.csv"):
        table.write_text(f"file,label,split\nclips/a.csv,0,train\nclips/b.csv,1,train\n{other},0,val\n")
        with pytest.raises(KinectFormatError, match=f"labels.csv:4: file '{re.escape(other)}' is the same file as "
                                                    f"'clips/a.csv' on line 2"):
            read_labels_csv(table)


def test_non_ascii_names_and_encodings_of_the_table(tmp_path):
    kinect_capture(tmp_path / "Gest\u00e9.csv")
    kinect_capture(tmp_path / "plain.csv")
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nplain.csv,0\nGest\u00e9.csv,1\n", encoding="utf-8")
    with pytest.raises(KinectFormatError, match="labels.csv:3: file name 'Gest\u00e9.csv' is not ASCII"):
        read_labels_csv(table)
    table.write_bytes(b"file,label\nplain.csv,0\nGest\xe9.csv,1\n")  # Latin-1, not UTF-8
    with pytest.raises(KinectFormatError, match="labels.csv:3: not UTF-8 text"):
        read_labels_csv(table)
    table.write_bytes("\ufefffile,label\nplain.csv,0\n".encode())  # a byte order mark, as Excel writes
    assert [row.file for row in read_labels_csv(table)] == ["plain.csv"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_the_table_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    table = tmp_path / "labels.csv"
    table.write_text("file,label\npipe.csv,0\n")
    with pytest.raises(KinectFormatError, match=r"labels.csv:2: capture 'pipe.csv' .* is not a regular file"):
        read_labels_csv(table)
