"""`ikem-data export`: reference-format files that round-trip the store."""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from skeleton_files import write_raw_store

from ikem_cli.data import main
from ikem_data.modalities.stage import build_modalities
from ikem_data.export import ExportError, export_benchmark, export_pyskl
from ikem_data.formats.pyskl import load_pickle
from ikem_data.store import open_store


@pytest.fixture()
def store_path(tmp_path):
    rng = np.random.default_rng(0)
    n = 7
    xyz = rng.normal(scale=0.4, size=(n, 3, 20, 25, 2)).astype(np.float32)
    names = [f"S001C00{1 + i % 3}P001R001A{i + 1:03d}" for i in range(n)]
    path = write_raw_store(tmp_path / "s.zarr", xyz, 14 + np.arange(n), names)  # frames <= the 20 that raw/xyz holds
    with open_store(path, "r+") as store:   # an unsorted split exercises the ordering
        store.create_array("splits/ntu60-xview/train", (4,), np.int64)[:] = [6, 1, 4, 2]
        store.create_array("splits/ntu60-xview/val", (3,), np.int64)[:] = [0, 5, 3]
    build_modalities(path, chunk_size=3, progress=False)
    return path


@pytest.mark.parametrize("benchmark", ["ntu60-xsub", "ntu60-xview"])
def test_round_trip(tmp_path, store_path, benchmark):
    out = tmp_path / "out"
    result = export_benchmark(store_path, benchmark, out, block=2)
    with open_store(store_path) as store:
        joint = store["modalities/joint"][:]
        names, labels, frames = store.names(), store["raw/label"][:], store["raw/frames"][:]
        for part in ("train", "val"):
            index = store.split(benchmark, part)
            position = np.load(out / f"{part}_position.npy")
            assert position.dtype == np.float32 and position.shape == (len(index), 3, 50, 25, 2)
            np.testing.assert_array_equal(position, joint[index])
            with open(out / f"{part}_label.pkl", "rb") as f:
                sample_name, label, frame = pickle.load(f)
            assert sample_name == [names[i] + ".skeleton" for i in index]
            assert label == [int(labels[i]) for i in index] and all(type(x) is int for x in label)
            assert frame == [int(frames[i]) for i in index]
            assert result[part]["samples"] == len(index)
    assert sorted(p.name for p in out.iterdir()) == ["train_label.pkl", "train_position.npy",
                                                    "val_label.pkl", "val_position.npy"]


def test_refusals(tmp_path, store_path):
    export_benchmark(store_path, "ntu60-xsub", tmp_path / "out")
    with pytest.raises(ExportError, match="already exists"):
        export_benchmark(store_path, "ntu60-xsub", tmp_path / "out")
    export_benchmark(store_path, "ntu60-xsub", tmp_path / "out", overwrite=True)
    with pytest.raises(ExportError, match="it has: ntu60-xsub, ntu60-xview"):
        export_benchmark(store_path, "ntu120-xset", tmp_path / "x")
    raw = write_raw_store(tmp_path / "raw.zarr", np.ones((2, 3, 4, 25, 2), np.float32), [4, 4],
                          ["S001C001P001R001A001", "S001C001P001R001A002"])
    with pytest.raises(ExportError, match="no complete modalities"):
        export_benchmark(raw, "ntu60-xsub", tmp_path / "y")


def test_command_line(tmp_path, store_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(store_path), "--benchmark", "ntu60-xview",
                                  "--to", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "train: 4 samples" in result.output and "val: 3 samples" in result.output
    result = runner.invoke(main, ["export", str(store_path), "--benchmark", "nope", "--to", str(tmp_path / "p")])
    assert result.exit_code != 0 and "benchmark 'nope' not in store" in result.output
    assert "Traceback" not in result.output


def test_pyskl_export_keeps_values_order_and_split_order(tmp_path, store_path):
    result = export_pyskl(store_path, tmp_path / "out" / "s.pkl", block=3)
    data = load_pickle(tmp_path / "out" / "s.pkl")
    with open_store(store_path) as store:
        xyz, frames, labels, names = store["raw/xyz"][:], store["raw/frames"][:], store["raw/label"][:], store.names()
        assert data["split"] == {f"{short}_{part}": [names[i] for i in store.split(bench, part)]
                                 for bench, short in (("ntu60-xsub", "xsub"), ("ntu60-xview", "xview"))
                                 for part in ("train", "val")}
        assert data["split"]["xview_train"] == [names[i] for i in (6, 1, 4, 2)]  # the split's own order
    assert [a["frame_dir"] for a in data["annotations"]] == names and result["samples"] == 7
    for i, a in enumerate(data["annotations"]):
        assert a["label"] == int(labels[i]) and a["total_frames"] == int(frames[i])
        want = np.stack([xyz[i, :, : frames[i], :, m].transpose(1, 2, 0) for m in range(2)])  # (M, T, V, C)
        assert a["keypoint"].dtype == np.float32 and a["keypoint"].flags.c_contiguous
        np.testing.assert_array_equal(a["keypoint"], want)
    single = write_raw_store(tmp_path / "one.zarr", np.pad(np.ones((2, 3, 4, 25, 1), np.float32),
                                                          [(0, 0)] * 4 + [(0, 1)]), [3, 4],
                             ["S001C001P001R001A001", "S001C001P002R001A002"])
    export_pyskl(single, tmp_path / "one.pkl", dtype="float16")
    keypoints = [a["keypoint"] for a in load_pickle(tmp_path / "one.pkl")["annotations"]]
    assert [k.shape for k in keypoints] == [(1, 3, 25, 3), (1, 4, 25, 3)]  # pyskl's M: the bodies present
    assert all(k.dtype == np.float16 and (k == 1).all() for k in keypoints)


def test_format_options_are_checked(tmp_path, store_path):
    runner = CliRunner()
    for args, message in ((["--to", str(tmp_path / "r")], "--benchmark is required for --format reference"),
                          (["--format", "pyskl", "--benchmark", "ntu60-xsub", "--to", str(tmp_path / "p.pkl")],
                           "--benchmark applies to --format reference"),
                          (["--format", "pyskl", "--to", str(tmp_path)], "is a folder; the pyskl export is one"),
                          (["--format", "pyskl", "--dtype", "float64", "--to", str(tmp_path / "p.pkl")],
                           "Invalid value for '--dtype'")):
        result = runner.invoke(main, ["export", str(store_path)] + args)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, args
    (tmp_path / "file").write_text("x")
    result = runner.invoke(main, ["export", str(store_path), "--benchmark", "ntu60-xsub",
                                  "--to", str(tmp_path / "file")])
    assert result.exit_code != 0 and "is a file; --format reference writes a folder" in result.output
    unfinished = write_raw_store(tmp_path / "u.zarr", np.ones((2, 3, 4, 25, 2), np.float32), [4, 4],
                                 ["S001C001P001R001A001", "S001C001P001R001A002"], complete=False)
    with pytest.raises(ExportError, match="no complete gendata stage"):
        export_pyskl(unfinished, tmp_path / "u.pkl")
    assert not (tmp_path / "u.pkl").exists()


def test_an_interrupted_pyskl_export_leaves_the_old_file(tmp_path, store_path, monkeypatch):
    import ikem_data.export as export_module

    target = tmp_path / "s.pkl"
    target.write_bytes(b"old")
    real = export_module._annotations

    def interrupted(*args):
        items = real(*args)
        yield next(items)
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_annotations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_pyskl(store_path, target, overwrite=True)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir() if "pkl" in p.name] == ["s.pkl"]


def test_pyskl_export_of_a_store_that_is_not_ntu_is_refused(tmp_path):
    """The bundled Kinect clips exported as pyskl gave a file that gendata --input-format pyskl
    refused (names and splits are not NTU's); now the export says so and writes nothing."""
    from ikem_data.demo_clips import write_demo_clips
    from ikem_data.gendata.run import gendata

    labels = write_demo_clips(tmp_path / "input", window=30, stride=15, block=45)
    store = tmp_path / "kinect.zarr"
    gendata(str(labels.parent / "clips"), str(store), input_format="kinect-csv", labels=str(labels), max_bodies=1,
            workers=1, progress=False, log=lambda *a: None)
    result = CliRunner().invoke(main, ["export", str(store), "--format", "pyskl", "--to", str(tmp_path / "k.pkl")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "holds kinect recordings; --format pyskl writes NTU RGB+D annotations" in result.output
    assert "use --format reference" in result.output and not list(tmp_path.glob("*.pkl*"))
