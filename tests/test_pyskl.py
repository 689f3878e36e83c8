"""pyskl annotation pickles in and out: same data as raw gendata up to float16, round trips,
a restricted unpickler that never runs a pickle's code, and every bad input refused by name.

The pickles are built here from the real NTU files through the test's own reader
(tests/ntu_reader.py, listed bodies), in pyskl's layout (M, T, V, C) float16 with M = the
persons present, dumped with protocol 2 as pyskl's mmcv.dump does.
"""

import os
import pickle
import re

import numpy as np
import pytest
from click.testing import CliRunner
from ntu_reader import read_xyz
from skeleton_files import assert_same_arrays, store_arrays

from ikem_cli.data import main as cli
from ikem_data.export import export_pyskl
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.formats.pyskl import PysklError, load_pickle
from ikem_data.store import open_store

QUIET = dict(workers=1, progress=False, log=lambda m: None)
# NTU-60 cross-subject training subjects (Shahroudy et al. 2016; pyskl's ntu_preproc.py), written out here.
TRAIN_SUBJECTS = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}


def _annotation(path, name=None):
    xyz, frames = read_xyz(path)  # (3, T, 25, 2) float32, listed bodies
    persons = 2 if xyz[..., 1].any() else 1
    name = name or path.stem
    return dict(frame_dir=name, label=int(name[-3:]) - 1, total_frames=frames,
                keypoint=np.ascontiguousarray(xyz[..., :persons].transpose(3, 1, 2, 0)).astype(np.float16))


def _ntu60_splits(names):
    subject = {n: int(n[9:12]) for n in names}
    camera = {n: int(n[5:8]) for n in names}
    return dict(xsub_train=[n for n in names if subject[n] in TRAIN_SUBJECTS],
                xsub_val=[n for n in names if subject[n] not in TRAIN_SUBJECTS],
                xview_train=[n for n in names if camera[n] != 1],
                xview_val=[n for n in names if camera[n] == 1])


def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def content(ntu_dir):
    """The pyskl dict of the 12 real files (annotations in name order)."""
    annotations = [_annotation(p) for p in sorted(ntu_dir.glob("*.skeleton"))]
    return dict(split=_ntu60_splits([a["frame_dir"] for a in annotations]), annotations=annotations)


@pytest.fixture(scope="module")
def pkl(content, tmp_path_factory):
    return _dump(tmp_path_factory.mktemp("pyskl") / "ntu60_3danno.pkl", content)


@pytest.fixture(scope="module")
def raw_store(ntu_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "raw.zarr"
    gendata(ntu_dir, out, chunk_size=4, **QUIET)
    return out


@pytest.fixture(scope="module")
def pyskl_store(pkl, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "ntu60.zarr"
    gendata(pkl, out, input_format="pyskl", chunk_size=4, **QUIET)
    return out


def test_import_equals_raw_gendata_up_to_float16(pyskl_store, raw_store):
    raw, imported = store_arrays(raw_store), store_arrays(pyskl_store)
    assert imported.keys() == raw.keys()
    for key in raw:
        if key != "xyz":
            np.testing.assert_array_equal(imported[key], raw[key], err_msg=key)
            assert imported[key].dtype == raw[key].dtype, key
    assert imported["xyz"].dtype == np.float32 and imported["xyz"].shape == raw["xyz"].shape
    # Exactly the raw values rounded to float16, and within float16's documented error.
    np.testing.assert_array_equal(imported["xyz"], raw["xyz"].astype(np.float16).astype(np.float32))
    error = np.abs(imported["xyz"].astype(np.float64) - raw["xyz"])
    assert error.max() <= 2.0 ** -11 * 8 and (error <= 2.0 ** -11 * np.abs(raw["xyz"]) + 2.0 ** -25).all()
    with open_store(pyskl_store) as store:
        state = store.attrs["gendata"]
        assert store.attrs["layout"] == "kinect_v2_25"
        assert state["params"]["input_format"] == "pyskl" and state["params"]["body_policy"] == "pyskl"
        assert state["dataset"] == "ntu60" and store.benchmarks() == ["ntu60-xsub", "ntu60-xview"]
        assert any("float16" in note for note in state["notes"])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_loads(content, tmp_path, protocol):
    loaded = load_pickle(_dump(tmp_path / "p.pkl", content, protocol))
    assert loaded["split"] == content["split"]
    for got, want in zip(loaded["annotations"], content["annotations"], strict=True):
        assert got.keys() == want.keys() and got["frame_dir"] == want["frame_dir"]
        assert got["keypoint"].dtype == np.float16
        np.testing.assert_array_equal(got["keypoint"], want["keypoint"])


def test_numpy_1_names_and_numpy_scalars_load(content, tmp_path):
    # pyskl's files were written by numpy 1.x, whose arrays pickle as numpy.core.multiarray.*
    first = dict(content["annotations"][0], label=np.int64(0), total_frames=np.int32(103))
    data = pickle.dumps(dict(content, annotations=[first] + content["annotations"][1:]), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = load_pickle(path)
    assert loaded["annotations"][0]["label"] == 0 and isinstance(loaded["annotations"][0]["label"], np.int64)
    np.testing.assert_array_equal(loaded["annotations"][3]["keypoint"], content["annotations"][3]["keypoint"])
    state = gendata(path, tmp_path / "s.zarr", input_format="pyskl", **QUIET)
    assert state["n_samples"] == 12 and not state["failed"]


def _assert_same_pyskl(got, want, dtype=np.float16):
    assert got["split"] == want["split"]
    assert len(got["annotations"]) == len(want["annotations"])
    for a, b in zip(got["annotations"], want["annotations"]):
        assert (a["frame_dir"], a["label"], a["total_frames"]) == (b["frame_dir"], b["label"], b["total_frames"])
        assert type(a["label"]) is int and a["keypoint"].dtype == dtype
        np.testing.assert_array_equal(a["keypoint"], b["keypoint"].astype(dtype))


def test_round_trip_pyskl_ikem_pyskl(pyskl_store, content, tmp_path):
    back = tmp_path / "back.pkl"
    result = export_pyskl(pyskl_store, back, dtype="float16", block=5)
    assert result["samples"] == 12 and result["splits"]["xview_val"] == len(content["split"]["xview_val"])
    with open(back, "rb") as f:  # what pyskl/mmaction2 do with it: a plain pickle.load
        _assert_same_pyskl(pickle.load(f), content)
    _assert_same_pyskl(load_pickle(back), content)
    export_pyskl(pyskl_store, tmp_path / "f32.pkl")  # default float32: the store's values exactly
    _assert_same_pyskl(load_pickle(tmp_path / "f32.pkl"), content, np.float32)
    again = tmp_path / "again.zarr"
    gendata(back, again, input_format="pyskl", chunk_size=4, **QUIET)
    assert_same_arrays(store_arrays(again), store_arrays(pyskl_store))
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]  # written under a temporary name


def test_ntu120_pickles_map_xsub_and_xset_and_export_keeps_ntu60_benchmarks(ntu_dir, tmp_path):
    paths = sorted(ntu_dir.glob("*.skeleton"))[:4]
    names = [p.stem for p in paths[:2]] + ["S018" + p.stem[4:] for p in paths[2:]]  # two NTU-120 setups
    annotations = [_annotation(p, n) for p, n in zip(paths, names)]
    split = dict(xsub_train=names[:3], xsub_val=names[3:], xset_train=names[2:], xset_val=names[:2])
    out = tmp_path / "ntu120.zarr"
    gendata(_dump(tmp_path / "ntu120.pkl", dict(split=split, annotations=annotations)), out,
            input_format="pyskl", **QUIET)
    with open_store(out) as store:
        assert store.attrs["gendata"]["dataset"] == "ntu120"
        assert store.benchmarks() == ["ntu120-xset", "ntu120-xsub"]
        assert store.split("ntu120-xsub", "train").tolist() == [0, 1, 2]
        assert store.split("ntu120-xset", "val").tolist() == [0, 1]
        assert store["raw/setup"][:].tolist() == [1, 1, 18, 18]
    # An NTU-120 store from raw files also has the NTU-60 benchmarks: exported under their
    # own names, they come back as the same benchmarks.
    raw = tmp_path / "raw"
    raw.mkdir()
    for path, name in zip(paths, names):
        (raw / f"{name}.skeleton").symlink_to(path)
    raw_store = tmp_path / "raw120.zarr"
    gendata(raw, raw_store, **QUIET)
    export_pyskl(raw_store, tmp_path / "x.pkl")
    exported = load_pickle(tmp_path / "x.pkl")
    assert sorted(exported["split"]) == sorted(f"{b}_{p}" for b in ("xsub", "xset", "ntu60_xsub", "ntu60_xview")
                                              for p in ("train", "val"))
    gendata(tmp_path / "x.pkl", tmp_path / "back.zarr", input_format="pyskl", **QUIET)
    assert_same_arrays(store_arrays(raw_store), store_arrays(tmp_path / "back.zarr"))


def test_resumes_after_an_interruption(pkl, pyskl_store, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        gendata(pkl, out, input_format="pyskl", chunk_size=4, write_chunks=1, stop_after_chunks=1, **QUIET)
    with open_store(out) as store:
        assert store.attrs["gendata"]["written"] == 4 and not store.attrs["gendata"]["complete"]
    state = gendata(pkl, out, input_format="pyskl", chunk_size=4, **QUIET)
    assert state["complete"] and state["n_samples"] == 12
    assert_same_arrays(store_arrays(out), store_arrays(pyskl_store))


def test_max_bodies_keeps_the_first_persons(pkl, pyskl_store, tmp_path):
    gendata(pkl, tmp_path / "one.zarr", input_format="pyskl", max_bodies=1, **QUIET)
    with open_store(tmp_path / "one.zarr") as one, open_store(pyskl_store) as two:
        np.testing.assert_array_equal(one["raw/xyz"][:], two["raw/xyz"][..., :1])
        np.testing.assert_array_equal(one["raw/bodies"][:], two["raw/bodies"][:])


class _RunsCode:
    """A pickle payload: unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("payload, refused", [
    (lambda marker: _RunsCode(os.system, f"touch '{marker}'"), f"{os.system.__module__}.system"),
    (lambda marker: _RunsCode(open, str(marker), "w"), f"{open.__module__}.open"),
    (lambda marker: _RunsCode(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
])
def test_a_pickle_that_runs_code_is_refused_and_its_code_never_runs(content, tmp_path, payload, refused):
    marker = tmp_path / "ran"
    evil = dict(content, annotations=[dict(content["annotations"][0], label=payload(marker))]
                + content["annotations"][1:])
    data = pickle.dumps(evil, protocol=2)
    for protocol in (2, 4):
        path = _dump(tmp_path / f"evil{protocol}.pkl", evil, protocol)
        with pytest.raises(PysklError, match=f"refused to load {refused}:"):
            load_pickle(path)
        result = CliRunner().invoke(cli, ["gendata", "--input-format", "pyskl", "--raw", str(path),
                                          "--out", str(tmp_path / "o.zarr"), "--on-error", "skip", "--no-progress"])
        assert result.exit_code != 0 and f"refused to load {refused}" in result.output
        assert str(path) in result.output and "Traceback" not in result.output
        assert not (tmp_path / "o.zarr").exists()
    assert not marker.exists()
    pickle.loads(data)  # the payload is real: plain pickle runs it
    assert marker.exists()


def test_a_numpy_array_built_other_than_numpys_way_is_refused(tmp_path):
    path = _dump(tmp_path / "big.pkl", {"split": {}, "annotations": [_RunsCode(np.ndarray, (1 << 40,))]})
    with pytest.raises(PysklError, match="numpy.ndarray may only be rebuilt"):
        load_pickle(path)


def test_2d_pickles_are_refused_with_the_reason(tmp_path):
    annotation = dict(frame_dir="S001C001P001R001A001", label=0, total_frames=5, img_shape=(1080, 1920),
                      original_shape=(1080, 1920), keypoint=np.zeros((1, 5, 17, 2), np.float16),
                      keypoint_score=np.ones((1, 5, 17), np.float16))
    path = _dump(tmp_path / "ntu60_hrnet.pkl", dict(split={}, annotations=[annotation]))
    with pytest.raises(GendataError, match="2D keypoints .*V=17.*C=2.*25 3D Kinect v2 joints"):
        gendata(path, tmp_path / "o.zarr", input_format="pyskl", on_error="skip", **QUIET)
    assert not (tmp_path / "o.zarr").exists()


def _bad(content, index, **changes):
    annotations = [dict(a) for a in content["annotations"]]
    old = annotations[index]["frame_dir"]
    annotations[index].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del annotations[index][key]
    new = annotations[index].get("frame_dir")  # a renamed sample is renamed in the splits too
    split = {k: [new if n == old else n for n in v] for k, v in content["split"].items()}
    return dict(split=split, annotations=annotations)


@pytest.mark.parametrize("change, message", [
    (dict(keypoint=np.zeros((54, 25, 3), np.float16)), "keypoint has rank 3 (shape (54, 25, 3)); expected 4"),
    (dict(keypoint=np.zeros((1, 54, 24, 3), np.float16)), "keypoint has V=24 joints and C=3 coordinates"),
    (dict(total_frames=53), "total_frames is 53 but keypoint has T=54 frames"),
    (dict(keypoint=np.full((1, 54, 25, 3), np.inf, np.float16)), "keypoint[0, 0, 0, 0] = np.float16(inf) is not a"),
    (dict(keypoint=np.zeros((1, 54, 25, 3), np.int16)), "keypoint is dtype int16; expected a float16"),
    (dict(keypoint_2d=1), "unexpected key 'keypoint_2d'"),
    (dict(label=None), "missing key label"),
    (dict(label=60), "label 60 is outside 0..59"),
    (dict(frame_dir="S001C001P001R001A000"), "action 0 is not an NTU id"),
])
def test_a_bad_annotation_stops_or_is_skipped(content, tmp_path, change, message):
    index = 4  # S001C001P001R001A005, 54 frames
    name = content["annotations"][index]["frame_dir"]
    path = _dump(tmp_path / "bad.pkl", _bad(content, index, **change))
    where = f"{path}: annotation {index}"
    with pytest.raises(GendataError, match=f"{re.escape(where)}.*: {re.escape(message)}"):
        gendata(path, tmp_path / "stop.zarr", input_format="pyskl", **QUIET)
    assert not (tmp_path / "stop.zarr").exists()
    state = gendata(path, tmp_path / "skip.zarr", input_format="pyskl", on_error="skip", **QUIET)
    assert len(state["failed"]) == 1 and state["failed"][0]["reason"].startswith(where)
    with open_store(tmp_path / "skip.zarr") as store:
        assert store.names() == [a["frame_dir"] for a in content["annotations"] if a["frame_dir"] != name]
        assert name not in [store.names()[i] for i in store.split("ntu60-xview", "val")]
        info = CliRunner().invoke(cli, ["info", str(tmp_path / "skip.zarr")]).output
    assert "failed files (1)" in info and "source:    pyskl (a pyskl annotation pickle (.pkl))" in info
    assert "layout:    kinect_v2_25" in info


def test_a_split_naming_an_unknown_frame_dir_stops_or_is_skipped(content, tmp_path):
    split = dict(content["split"], xsub_val=content["split"]["xsub_val"] + ["S001C001P001R001A099"])
    path = _dump(tmp_path / "s.pkl", dict(content, split=split))
    entry = len(split["xsub_val"]) - 1
    with pytest.raises(GendataError, match=f"split 'xsub_val' entry {entry}: frame_dir 'S001C001P001R001A099' "
                                           f"has no annotation"):
        gendata(path, tmp_path / "stop.zarr", input_format="pyskl", **QUIET)
    state = gendata(path, tmp_path / "skip.zarr", input_format="pyskl", on_error="skip", **QUIET)
    assert [f["reason"] for f in state["failed"]] == [f"{path}: split 'xsub_val' entry {entry}: frame_dir "
                                                      f"'S001C001P001R001A099' has no annotation"]
    assert state["benchmarks"]["ntu60-xsub"] == {"train": 9, "val": 3}


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "holds a list, not a pyskl dict"),
    ({"split": {}, "annotations": [], "meta": 1}, r"exactly the keys 'split' and 'annotations' \(unexpected 'meta'\)"),
    ({"split": {"xsub_train": "S001"}, "annotations": []}, "split 'xsub_train' is not a list of frame_dir"),
    ({"split": {"train": []}, "annotations": None}, "'annotations' is a NoneType, not a list"),
])
def test_a_pickle_that_is_not_pyskl_is_refused_whatever_on_error(tmp_path, obj, message):
    path = _dump(tmp_path / "x.pkl", obj)
    with pytest.raises(GendataError, match=message):
        gendata(path, tmp_path / "o.zarr", input_format="pyskl", on_error="skip", **QUIET)


def test_unknown_split_names_and_truncated_files_are_refused(content, tmp_path):
    path = _dump(tmp_path / "s.pkl", dict(content, split={"train": content["split"]["xsub_train"]}))
    with pytest.raises(GendataError, match="split 'train' is not a split of a ntu60 pickle .*xsub_train"):
        gendata(path, tmp_path / "o.zarr", input_format="pyskl", on_error="skip", **QUIET)
    path = _dump(tmp_path / "x.pkl", dict(content, split={"xset_train": []}))
    with pytest.raises(GendataError, match="split 'xset_train' is not a split of a ntu60 pickle"):
        gendata(path, tmp_path / "o.zarr", input_format="pyskl", **QUIET)
    data = pickle.dumps(content, protocol=2)
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(GendataError, match=f"{tmp_path / 'cut.pkl'}: not a readable pickle"):
        gendata(tmp_path / "cut.pkl", tmp_path / "o.zarr", input_format="pyskl", **QUIET)
    assert not (tmp_path / "o.zarr").exists()


def test_command_line_import_and_export(pkl, pyskl_store, content, tmp_path):
    runner = CliRunner()
    out = tmp_path / "c.zarr"
    result = runner.invoke(cli, ["gendata", "--input-format", "pyskl", "--raw", str(pkl), "--out", str(out),
                                 "--chunk-size", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert_same_arrays(store_arrays(out), store_arrays(pyskl_store))
    target = tmp_path / "ntu60_from_ikem.pkl"
    result = runner.invoke(cli, ["export", str(out), "--format", "pyskl", "--to", str(target), "--dtype", "float16"])
    assert result.exit_code == 0 and "12 samples (" in result.output and "xsub_train 9" in result.output
    _assert_same_pyskl(load_pickle(target), content)
    result = runner.invoke(cli, ["export", str(out), "--format", "pyskl", "--to", str(target)])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(cli, ["export", str(out), "--format", "pyskl", "--to", str(target), "--overwrite"])
    assert result.exit_code == 0 and load_pickle(target)["annotations"][0]["keypoint"].dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir() if "pkl" in p.name) == ["ntu60_from_ikem.pkl"]
    result = runner.invoke(cli, ["gendata", "--input-format", "pyskl", "--raw", str(pkl), "--out",
                                 str(tmp_path / "t.zarr"), "--bodies", "tracked"])
    assert result.exit_code != 0 and "--bodies applies to NTU" in result.output
