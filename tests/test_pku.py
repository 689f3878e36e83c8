"""PKU-MMD phase I and II folders into stores: segments, labels and splits as computed here
from the text, every bad input refused by file and line, each video parsed once per pass.

The folders are crafted in the layout of MAMP's pku_gendata.py: skeleton/<video>.txt rows
of 150 numbers written as the real files are (6 decimals, later rows with a leading
space), label/<video>.txt rows label,start,end,confidence, and split files whose line 2
lists the training videos and line 4 the validation videos.
"""

import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import assert_same_arrays, store_arrays

from ikem_cli.data import main as cli
from ikem_data.formats import pku
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.store import open_store

QUIET = dict(workers=1, progress=False, log=lambda m: None)
VIEW_CAMERA = {"L": 1, "M": 2, "R": 3}


def _rows(rng, frames, second=None):
    """(frames, 150) values rounded to 6 decimals; body 2 present in the ``second`` frames only."""
    rows = np.round(rng.normal(size=(frames, 150)) + np.tile([0.0, 0.0, 3.0], 50), 6)
    absent = np.ones(frames, bool)
    absent[second if second is not None else slice(0, 0)] = False
    rows[absent, 75:] = 0.0  # a missing body is written as zeros
    return rows


def _text(rows):
    return "".join((" " if i else "") + " ".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(rows))


# Videos: frames, frames with a second body, label rows (label, start, end) covering the
# first frame, the last, a two-person stretch, labels 1 and 51.
VIDEOS = {
    "pku1": {"0002-L": (40, slice(None), [(1, 0, 10), (51, 10, 25), (7, 25, 40)]),
             "0002-M": (30, None, [(3, 5, 12), (12, 20, 30)]),
             "0003-R": (25, slice(10, 20), [(5, 0, 25)])},
    "pku2": {"A01N01-L": (35, slice(0, 5), [(1, 0, 7), (51, 30, 35)]),
             "A01N02-M": (20, None, [(9, 3, 20)]),
             "A02N01-R": (28, slice(None), [(50, 0, 28), (11, 1, 2)])},
}
SPLITS = {"pku1": {"xsub": (["0002-L", "0002-M"], ["0003-R"]), "xview": (["0002-M", "0003-R"], ["0002-L"])},
          "pku2": {"xsub": (["A01N01-L"], ["A01N02-M", "A02N01-R"]), "xview": (["A01N02-M", "A02N01-R"], ["A01N01-L"])}}
SPLIT_NAMES = {"pku1": {"xsub": "cross_subject.txt", "xview": "cross_view.txt"},
               "pku2": {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"}}


def _split_text(train, val):
    return f"Training videos: \n{', '.join(train)}, \nValidataion videos: \n{', '.join(val)}\n"


def _folder(root, dataset, hyphens=False):
    """Write a crafted folder; returns (folder, {video: rows})."""
    rng = np.random.default_rng(len(dataset))
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    rows = {}
    for video, (frames, second, labels) in VIDEOS[dataset].items():
        rows[video] = _rows(rng, frames, second)
        (root / "skeleton" / f"{video}.txt").write_text(_text(rows[video]))
        (root / "label" / f"{video}.txt").write_text("".join(f"{a},{s},{e},{1 + k % 2}\n"
                                                             for k, (a, s, e) in enumerate(labels)))
    for benchmark, name in SPLIT_NAMES[dataset].items():
        name = name.replace("_", "-") if hyphens else name
        (root / name).write_text(_split_text(*SPLITS[dataset][benchmark]))
    return root, rows


def _read_rows(path):
    """An obvious reader: one float per token, one row per line."""
    return np.array([[float(x) for x in line.split()] for line in open(path).read().splitlines()])


def _expected(root, dataset):
    """Names, xyz (N, 3, T_max, 25, 2), frames, labels, bodies, cameras and splits, from the files."""
    samples = []
    for video in sorted(VIDEOS[dataset]):
        rows = _read_rows(root / "skeleton" / f"{video}.txt")
        for k, line in enumerate(open(root / "label" / f"{video}.txt").read().splitlines()):
            label, start, end, _ = (int(x) for x in line.split(","))
            segment = rows[start:end].reshape(end - start, 2, 25, 3)  # frames start .. end - 1
            samples.append((f"{video}_{k}", segment.transpose(3, 0, 2, 1), label - 1, video))
    t_max = max(s[1].shape[1] for s in samples)
    xyz = np.zeros((len(samples), 3, t_max, 25, 2), np.float32)
    for n, (_, seq, _, _) in enumerate(samples):
        xyz[n, :, : seq.shape[1]] = seq
    splits = {}
    for benchmark, (train, val) in SPLITS[dataset].items():
        for part, videos in (("train", train), ("val", val)):
            splits[f"{dataset}-{benchmark}/{part}"] = [n for n, s in enumerate(samples) if s[3] in videos]
    return dict(name=[s[0] for s in samples], xyz=xyz, frames=[s[1].shape[1] for s in samples],
                label=[s[2] for s in samples], bodies=[int(s[1].any(axis=(0, 1, 2)).sum()) for s in samples],
                camera=[VIEW_CAMERA[s[3][-1]] for s in samples], splits=splits)


@pytest.mark.parametrize("dataset, hyphens", [("pku1", False), ("pku1", True), ("pku2", False)])
def test_segments_labels_and_splits(tmp_path, dataset, hyphens):
    root, _ = _folder(tmp_path / "PKUMMD", dataset, hyphens)
    out = tmp_path / "s.zarr"
    state = gendata(root, out, input_format="pku-mmd", chunk_size=2, **QUIET)  # phase from the split files
    want = _expected(root, dataset)
    with open_store(out) as store:
        assert store.names() == want["name"]
        np.testing.assert_array_equal(store["raw/xyz"][:], want["xyz"])
        assert store["raw/frames"][:].tolist() == want["frames"]
        assert store["raw/label"][:].tolist() == want["label"] and store["raw/label"].dtype == np.int16
        assert store["raw/bodies"][:].tolist() == want["bodies"]
        assert store["raw/camera"][:].tolist() == want["camera"]
        assert store["raw/subject"][:].tolist() == [-1] * len(want["name"])
        assert store.benchmarks() == [f"{dataset}-xsub", f"{dataset}-xview"]
        for key, index in want["splits"].items():
            assert store.split(*key.split("/")).tolist() == index, key
        assert store.attrs["layout"] == "kinect_v2_25"
        assert state["dataset"] == dataset and state["params"]["body_policy"] == "as-recorded"
        assert store["raw/name"].dtype.kind == "S"
    assert 1 in want["bodies"] and 2 in want["bodies"] and 0 in want["label"] and 50 in want["label"]
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "source:    pku-mmd (the PKU-MMD folder)" in info and "layout:    kinect_v2_25" in info
    assert f"{dataset}-xsub" in info


def test_a_video_is_parsed_once_per_pass(tmp_path, monkeypatch):
    root, _ = _folder(tmp_path / "PKUMMD", "pku1")
    reads = []
    real = pku.read_regular_file
    monkeypatch.setattr(pku, "read_regular_file",
                        lambda path, what="file": reads.append(str(path)) or real(path, what))
    gendata(root, tmp_path / "one.zarr", input_format="pku-mmd", **QUIET)
    skeleton_reads = {v: reads.count(str(root / "skeleton" / f"{v}.txt")) for v in VIDEOS["pku1"]}
    assert skeleton_reads == {v: 2 for v in VIDEOS["pku1"]}  # the check pass and the write pass
    # Spawned workers, given each video's segments together, write the same store.
    gendata(root, tmp_path / "two.zarr", input_format="pku-mmd", workers=2, progress=False, log=lambda m: None)
    assert_same_arrays(store_arrays(tmp_path / "one.zarr"), store_arrays(tmp_path / "two.zarr"))


def test_resumes_after_an_interruption(tmp_path):
    root, _ = _folder(tmp_path / "PKUMMD", "pku2")
    gendata(root, tmp_path / "full.h5", input_format="pku-mmd", chunk_size=2, **QUIET)
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        gendata(root, out, input_format="pku-mmd", chunk_size=2, write_chunks=1, stop_after_chunks=1, **QUIET)
    result = CliRunner().invoke(cli, ["gendata", "--input-format", "pku-mmd", "--raw", str(root), "--dataset", "pku2",
                                      "--out", str(out), "--chunk-size", "2", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    assert_same_arrays(store_arrays(out), store_arrays(tmp_path / "full.h5"))


def _edit(path, line, text):
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = text
    path.write_text("".join(lines))


def _stop_then_skip(tmp_path, root, message, failed_names):
    """With stop: the error; nothing written. With skip: the others stored, these recorded."""
    with pytest.raises(GendataError, match=re.escape(message)):
        gendata(root, tmp_path / "stop.zarr", input_format="pku-mmd", **QUIET)
    assert not (tmp_path / "stop.zarr").exists()
    shutil.rmtree(tmp_path / "skip.zarr", ignore_errors=True)  # a test may call this twice
    state = gendata(root, tmp_path / "skip.zarr", input_format="pku-mmd", on_error="skip", **QUIET)
    assert any(message in f["reason"] for f in state["failed"])
    want = [n for n in _expected_names("pku1") if n not in failed_names]
    with open_store(tmp_path / "skip.zarr") as store:
        assert store.names() == want
    return state


def _expected_names(dataset):
    return [f"{v}_{k}" for v in sorted(VIDEOS[dataset]) for k in range(len(VIDEOS[dataset][v][2]))]


def test_a_segment_that_ends_before_it_starts(tmp_path):
    root, _ = _folder(tmp_path / "P", "pku1")
    label = root / "label" / "0002-L.txt"
    _edit(label, 2, "51,25,10,2\n")
    _stop_then_skip(tmp_path, root, f"{label}:2: the segment ends (frame 10) before it starts (frame 25)",
                    ["0002-L_1"])


def test_a_segment_past_the_end_of_its_video(tmp_path):
    root, _ = _folder(tmp_path / "P", "pku1")
    label = root / "label" / "0002-L.txt"
    _edit(label, 3, "7,25,41,1\n")  # the video has 40 frames
    skeleton = root / "skeleton" / "0002-L.txt"
    _stop_then_skip(tmp_path, root, f"{label}:3 (segment 0002-L_2): the segment ends at frame 41 (excluded), past "
                                    f"the end of {skeleton} (40 frames)", ["0002-L_2"])


@pytest.mark.parametrize("label", ["0", "52", "x"])
def test_a_label_outside_1_to_51(tmp_path, label):
    root, _ = _folder(tmp_path / "P", "pku1")
    path = root / "label" / "0002-M.txt"
    _edit(path, 1, f"{label},5,12,1\n")
    reason = f"label {label} is outside 1..51" if label != "x" else "label 'x' is not an integer"
    _stop_then_skip(tmp_path, root, f"{path}:1: {reason}", ["0002-M_0"])


@pytest.mark.parametrize("row, reason", [
    (lambda r: " ".join(r.split()[:149]) + "\n", "149 numbers; expected 150"),
    (lambda r: " ".join(r.split()[:3] + ["nan"] + r.split()[4:]) + "\n", "field 4 ('nan') is not a finite float32"),
    (lambda r: " ".join(["1.2.3"] + r.split()[1:]) + "\n", "field 1 ('1.2.3') is not a number"),
    (lambda r: "\n", "empty line"),
])
def test_a_malformed_skeleton_row(tmp_path, row, reason):
    root, _ = _folder(tmp_path / "P", "pku1")
    skeleton = root / "skeleton" / "0002-M.txt"
    _edit(skeleton, 7, row(skeleton.read_text().splitlines(keepends=True)[6]))
    state = _stop_then_skip(tmp_path, root, f"{skeleton}:7: {reason}", ["0002-M_0", "0002-M_1"])
    assert len(state["failed"]) == 2  # each segment of the video, each naming the row


def test_a_segment_without_any_body(tmp_path):
    root, rows = _folder(tmp_path / "P", "pku1")
    rows = rows["0003-R"]
    rows[:] = 0
    (root / "skeleton" / "0003-R.txt").write_text(_text(rows))
    _stop_then_skip(tmp_path, root, "frames 0..24 of", ["0003-R_0"])


def test_split_files_missing_or_naming_videos_the_folder_lacks(tmp_path):
    root, _ = _folder(tmp_path / "P", "pku1")
    split = root / "cross_view.txt"
    split.write_text(_split_text(["0002-M", "0003-R", "0009-L"], ["0002-L"]))
    # a partial copy (the split files list every video of the phase): stored, and said so
    state = gendata(root, tmp_path / "partial.zarr", input_format="pku-mmd", **QUIET)
    assert any("1 videos that cross_subject.txt and cross_view.txt list have no skeleton file" in n
               and "e.g. 0009-L" in n for n in state["notes"]) and not state["failed"]
    with open_store(tmp_path / "partial.zarr") as store:
        assert store.names() == _expected_names("pku1")
    split.unlink()
    for on_error in ("stop", "skip"):
        with pytest.raises(GendataError, match="no split file cross_view.txt or cross-view.txt in"):
            gendata(root, tmp_path / "x.zarr", input_format="pku-mmd", dataset="pku1", on_error=on_error, **QUIET)
    split.write_text("Training videos: \n0002-M, 0002-L\nValidataion videos: \n0002-L\n")
    with pytest.raises(GendataError, match="video 0002-L is listed as training .line 2. and validation .line 4."):
        gendata(root, tmp_path / "x.zarr", input_format="pku-mmd", dataset="pku1", **QUIET)
    assert not (tmp_path / "x.zarr").exists()
    split.write_text(_split_text(["0002-M"], ["0002-L"]))  # 0003-R in neither part
    _stop_then_skip(tmp_path, root, "video 0003-R is in neither part of cross_view.txt", ["0003-R_0"])


def test_phase_and_layout_errors(tmp_path):
    root, _ = _folder(tmp_path / "P", "pku1")
    (root / "cross_subject_v2.txt").write_text(_split_text([], []))
    with pytest.raises(GendataError, match="pass --dataset pku1 or pku2"):
        gendata(root, tmp_path / "o.zarr", input_format="pku-mmd", **QUIET)
    with pytest.raises(GendataError, match="no split file cross_view_v2.txt"):
        gendata(root, tmp_path / "o.zarr", input_format="pku-mmd", dataset="pku2", **QUIET)
    with pytest.raises(GendataError, match="does not exist"):
        gendata(tmp_path / "absent", tmp_path / "o.zarr", input_format="pku-mmd", dataset="pku1", **QUIET)
    with pytest.raises(GendataError, match="ntu60 or ntu120"):
        gendata(root, tmp_path / "o.zarr", input_format="pyskl", dataset="pku1", **QUIET)


def test_info_shows_source_and_layout_also_when_not_recorded(tmp_path):
    root, _ = _folder(tmp_path / "P", "pku2")
    out = tmp_path / "s.h5"
    gendata(root, out, input_format="pku-mmd", **QUIET)
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert f"source:    pku-mmd (the PKU-MMD folder) from {root.resolve()}; bodies: as-recorded" in info
    assert "layout:    kinect_v2_25\n" in info and "dataset:   pku2" in info
    with open_store(out, "r+") as store:  # a store written before stores recorded their layout
        del store.attrs["layout"]
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert "layout:    not recorded (a store made before ikem recorded layouts: kinect_v2_25)" in info


def test_the_real_videos_against_their_label_and_skeleton_files(tmp_path):
    """Six real PKU-MMD phase I videos (0005, 0006; views L, M, R), read the slow way here."""
    from conftest import SHARED_DATA

    raw = SHARED_DATA / "pku_mmd_sample"
    if not raw.is_dir():
        pytest.skip(f"real data not found in {raw}")
    state = gendata(raw, tmp_path / "pku.zarr", input_format="pku-mmd", **QUIET)
    assert state["dataset"] == "pku1" and not state["failed"]
    listed = {}
    for benchmark, name in (("pku1-xsub", "cross-subject.txt"), ("pku1-xview", "cross-view.txt")):
        lines = (raw / name).read_text().splitlines()
        for part, line in (("train", lines[1]), ("val", lines[3])):
            for video in filter(None, (v.strip() for v in line.split(","))):
                listed.setdefault(video, {})[benchmark] = part
    names, labels, frames, cameras, ends, parts = [], [], [], [], [], {}
    for video in sorted(p.stem for p in (raw / "skeleton").glob("*.txt")):
        rows = [[float(v) for v in line.split()] for line in (raw / "skeleton" / f"{video}.txt").read_text().splitlines()]
        for k, line in enumerate((raw / "label" / f"{video}.txt").read_text().splitlines()):
            label, start, end, _ = (int(v) for v in line.split(","))
            names.append(f"{video}_{k}")
            labels.append(label - 1)
            frames.append(end - start)
            cameras.append("LMR".index(video[-1]) + 1)
            # rows start and end - 1, both bodies: (2 x 25 x 3) -> (3, 25, 2)
            ends.append([np.array(rows[i], dtype=np.float32).reshape(2, 25, 3).transpose(2, 1, 0)
                         for i in (start, end - 1)])
            for benchmark, part in listed[video].items():
                parts.setdefault((benchmark, part), []).append(len(names) - 1)
    with open_store(tmp_path / "pku.zarr") as store:
        assert store.names() == names and len(names) == 48
        assert store["raw/label"][:].tolist() == labels and store["raw/frames"][:].tolist() == frames
        assert store["raw/camera"][:].tolist() == cameras
        for (benchmark, part), index in parts.items():
            assert store.split(benchmark, part).tolist() == index, (benchmark, part)
        for i in (0, 17, 47):
            xyz = store["raw/xyz"][i]
            np.testing.assert_array_equal(xyz[:, 0], ends[i][0])
            np.testing.assert_array_equal(xyz[:, frames[i] - 1], ends[i][1])
    assert any("have no skeleton file" in note for note in state["notes"])
