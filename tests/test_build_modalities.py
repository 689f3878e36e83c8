"""`ikem-data modalities`: the chunked, resumable store stage and its command."""

import numpy as np
import pytest
from click.testing import CliRunner

import ikem_data.modalities.stage as bm
from ikem_cli.data import main
from ikem_data.modalities.stage import StageError, build_modalities
from ikem_data.modalities.kernels import compute_modalities
from ikem_data.names import MODALITIES
from ikem_data.modalities.preprocess import preprocess
from ikem_data.store import open_store
from ntu_reader import read_batch
from skeleton_files import write_raw_store


@pytest.fixture(scope="module")
def real(ntu_dir):
    return read_batch(ntu_dir)


def expected_modalities(xyz, frames, **kw):
    joint, lengths = preprocess(xyz, rotation_sign=kw.get("rotation_sign", "sequence"))
    return compute_modalities(joint, frames, bone_pairs=kw.get("bone_pairs", "ikem")), lengths


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_in_place_matches_the_array_functions(tmp_path, real, suffix):
    xyz, frames, names = real
    path = write_raw_store(tmp_path / f"ntu{suffix}", xyz, frames, names)
    status, attrs = build_modalities(path, chunk_size=5, workers=1, progress=False)
    assert status == "written" and attrs["complete"] and attrs["done"] == len(names)
    expected, lengths = expected_modalities(xyz, frames)
    with open_store(path) as store:
        for name in MODALITIES:
            np.testing.assert_array_equal(store[f"modalities/{name}"][:], expected[name], err_msg=name)
        np.testing.assert_array_equal(store["modalities/valid_length"][:], lengths)
        saved = store.attrs["modalities"]
        assert saved["params"] == {"t_length": 50, "rotation_sign": "sequence", "bone_pairs": "ikem",
                                   "true_timeline": True, "t_ref": 50.0, "on_empty": "error",
                                   "names": list(MODALITIES)}
        assert saved["empty_samples"] == []
    # Same parameters again: left alone.
    assert build_modalities(path, progress=False)[0] == "unchanged"


def test_from_copies_raw_splits_and_attrs(tmp_path, real):
    xyz, frames, names = real
    src = write_raw_store(tmp_path / "raw.zarr", xyz[:5], frames[:5], names[:5])
    out = tmp_path / "new.h5"
    build_modalities(out, source=src, chunk_size=4, rotation_sign="per_frame", progress=False)
    expected, _ = expected_modalities(xyz[:5], frames[:5], rotation_sign="per_frame")
    with open_store(out) as store, open_store(src) as raw:
        for name in ("raw/xyz", "raw/frames", "raw/name", "raw/label"):
            np.testing.assert_array_equal(store[name][:], raw[name][:], err_msg=name)
        assert store.benchmarks() == ["ntu60-xsub"]
        np.testing.assert_array_equal(store.split("ntu60-xsub", "val"), raw.split("ntu60-xsub", "val"))
        assert store.attrs["dataset"] == "ntu60-test" and store.is_complete("gendata")
        np.testing.assert_array_equal(store["modalities/bone"][:], expected["bone"])
        assert "modalities" not in raw
    # A rerun keeps the copy and the complete stage.
    assert build_modalities(out, source=src, rotation_sign="per_frame", progress=False)[0] == "unchanged"


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_interrupted_run_resumes(tmp_path, real, monkeypatch, suffix):
    xyz, frames, names = real
    path = write_raw_store(tmp_path / f"ntu{suffix}", xyz, frames, names)
    calls = {"n": 0}
    original = bm.compute_modalities

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(bm, "compute_modalities", failing)
    with pytest.raises(KeyboardInterrupt):   # steps of 2 chunks of 2 samples
        build_modalities(path, chunk_size=2, step_chunks=2, progress=False)
    with open_store(path) as store:
        attrs = store.attrs["modalities"]
        assert attrs["complete"] is False and attrs["done"] == 8
    resumed_from = []
    monkeypatch.setattr(bm, "compute_modalities", lambda x, *a, **k: resumed_from.append(len(x)) or original(x, *a, **k))
    status, attrs = build_modalities(path, chunk_size=2, step_chunks=3, progress=False)
    assert status == "resumed" and attrs["complete"]
    assert sum(resumed_from) == len(frames) - 8  # only the samples not yet written
    expected, _ = expected_modalities(xyz, frames)
    with open_store(path) as store:
        for name in MODALITIES:
            np.testing.assert_array_equal(store[f"modalities/{name}"][:], expected[name], err_msg=name)


def test_other_parameters_are_refused_unless_overwrite(tmp_path, real):
    xyz, frames, names = real
    path = write_raw_store(tmp_path / "ntu.zarr", xyz[:3], frames[:3], names[:3])
    build_modalities(path, progress=False)
    with pytest.raises(StageError, match="other parameters"):
        build_modalities(path, bone_pairs="crossclr", progress=False)
    status, attrs = build_modalities(path, bone_pairs="crossclr", t_length=30, overwrite=True, progress=False)
    assert status == "written" and attrs["params"]["bone_pairs"] == "crossclr"
    with open_store(path) as store:
        assert store["modalities/joint"].shape == (3, 3, 30, 25, 2)
        assert not store["modalities/bone"][:, :, :, 20].any()   # crossclr: zero root bone


def test_bad_stores_and_samples_are_named(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(4, 3, 12, 25, 2)).astype(np.float32)
    names = [f"S001C001P001R001A00{i}" for i in range(1, 5)]
    with pytest.raises(StageError, match="gendata is not complete"):
        build_modalities(write_raw_store(tmp_path / "a.zarr", xyz, [12] * 4, names, complete=False),
                         progress=False)
    with open_store(tmp_path / "empty.zarr", "w"):
        pass
    with pytest.raises(StageError, match="no raw/xyz"):
        build_modalities(tmp_path / "empty.zarr", progress=False)
    with pytest.raises(StageError, match="t_length"):
        build_modalities(tmp_path / "empty.zarr", t_length=2, progress=False)

    bad = xyz.copy()
    bad[2, :, :, 0, 0] = 0                                    # no valid frame
    path = write_raw_store(tmp_path / "b.zarr", bad, [12] * 4, names)
    with pytest.raises(StageError, match=r"b\.zarr: sample S001C001P001R001A003 \(index 2\): no valid frame"):
        build_modalities(path, chunk_size=2, step_chunks=1, progress=False)
    with open_store(path) as store:
        assert store.attrs["modalities"]["complete"] is False
        assert store.attrs["modalities"]["done"] == 2
    status, attrs = build_modalities(path, chunk_size=2, on_empty="skip", overwrite=True, progress=False)
    assert attrs["complete"] and attrs["empty_samples"] == ["S001C001P001R001A003"]
    with open_store(path) as store:
        assert store["modalities/valid_length"][:].tolist() == [12, 12, 0, 12]
        assert not store["modalities/joint"][2].any() and store["modalities/joint"][3].any()

    bad = xyz.copy()
    bad[3, 1, 5, 7, 1] = np.nan
    path = write_raw_store(tmp_path / "c.h5", bad, [12] * 4, names)
    with pytest.raises(StageError, match=r"sample S001C001P001R001A004 \(index 3\): NaN"):
        build_modalities(path, chunk_size=3, progress=False)


def test_command_line(tmp_path, real):
    xyz, frames, names = real
    src = write_raw_store(tmp_path / "raw.zarr", xyz[:2], frames[:2], names[:2])
    runner = CliRunner()
    result = runner.invoke(main, ["modalities", "--from", str(src), "--out", str(tmp_path / "m.zarr"),
                                  "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "modalities written for 2 samples" in result.output
    result = runner.invoke(main, ["modalities", "--out", str(tmp_path / "m.zarr"), "--quiet"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    for args, message in [
        (["--out", str(tmp_path / "m.zarr"), "--t-length", "2"], "t_length must be an integer >= 3"),
        (["--out", str(tmp_path / "m.zarr"), "--rotation-sign", "x"], "Invalid value"),
        (["--out", str(tmp_path / "m.zarr"), "--bone-pairs", "crossclr"], "other parameters"),
        (["--out", str(tmp_path / "nothing.zarr")], "no store at"),
    ]:
        result = runner.invoke(main, ["modalities", "--quiet"] + args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_missing_store_is_refused_without_leaving_a_lock_file(tmp_path):
    from ikem_data.modalities.stage import StageError, build_modalities

    missing = tmp_path / "missing.zarr"
    with pytest.raises(StageError, match="no store at .*missing.zarr"):
        build_modalities(str(missing), progress=False)
    assert list(tmp_path.iterdir()) == []
