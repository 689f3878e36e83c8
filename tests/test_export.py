"""`ikem-data export`: reference-format files that round-trip the store."""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from ikem_cli.data import main
from ikem_data.build_modalities import build_modalities
from ikem_data.export import ExportError, export_benchmark
from ikem_data.store import open_store
from test_build_modalities import write_raw_store


@pytest.fixture()
def store_path(tmp_path):
    rng = np.random.default_rng(0)
    n = 7
    xyz = rng.normal(scale=0.4, size=(n, 3, 20, 25, 2)).astype(np.float32)
    names = [f"S001C00{1 + i % 3}P001R001A{i + 1:03d}" for i in range(n)]
    path = write_raw_store(tmp_path / "s.zarr", xyz, 20 + np.arange(n), names)
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
