"""NW-UCLA, UTD-MHAD and MSRC-12 through gendata, each against a slow reference written
here on the real files (skipped when ../shared/data lacks them); malformed files of each
named with line or field; the registry takes a new format without touching gendata."""

import json
import pickle
import shutil
from fractions import Fraction

import numpy as np
import pytest

from conftest import SHARED_DATA
from ikem_data.formats import msrc12, utd_mhad
from ikem_data.formats.registry import FORMATS, InputFormat
from ikem_data.gendata.run import GendataError, gendata
from ikem_data.layouts import KINECT_V1_20, get_layout
from ikem_data.store import open_store

QUIET = dict(workers=1, progress=False, log=lambda m: None)
NWUCLA = SHARED_DATA / "nwucla_all_sqe"
UTD = SHARED_DATA / "utd_mhad_skeleton"
MSRC = SHARED_DATA / "msrc12_sample"
SDK_ORDER = list(get_layout(KINECT_V1_20).joints)


def _need(folder):
    if not folder.is_dir():
        pytest.skip(f"real data not found in {folder}")
    return folder


def _build(tmp_path_factory, fmt, raw, name):
    out = tmp_path_factory.mktemp(name) / f"{name}.zarr"
    state = gendata(str(raw), str(out), input_format=fmt, **QUIET)
    return out, state


def _store_columns(out):
    with open_store(out) as store:
        cols = {key: store[f"raw/{key}"][:].tolist() for key in ("label", "frames", "camera", "subject", "replication")}
        cols["name"] = store.names()
        cols["splits"] = {b: {p: store.split(b, p).tolist() for p in ("train", "val")} for b in store.benchmarks()}
        cols["layout"] = store.attrs["layout"]
        cols["params"] = store.stage("gendata")["params"]
    return cols


def _frames(out, index, frames):
    with open_store(out) as store:
        xyz = store["raw/xyz"][index]
    return xyz[..., 0][:, frames]  # (3, len(frames), V), body 0


class _NoClasses(pickle.Unpickler):
    def find_class(self, module, name):  # val_label.pkl is a list of dicts: no class is needed
        raise pickle.UnpicklingError(f"refused {module}.{name}")


# -- NW-UCLA -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nwucla(tmp_path_factory):
    return _build(tmp_path_factory, "nwucla", _need(NWUCLA), "nwucla")


def test_nwucla_against_the_json_files(nwucla):
    out, state = nwucla
    codes = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]
    ref = []
    for path in sorted(NWUCLA.glob("*.json")):
        a, s, e, v = (int(part[1:]) for part in path.stem.split("_"))
        with open(path) as handle:
            record = json.load(handle)
        assert record["label"] == codes.index(a) + 1 and record["file_name"] == path.stem
        ref.append(dict(name=path.stem, label=codes.index(a), view=v, subject=s, rep=e,
                        skel=np.asarray(record["skeletons"], dtype=np.float32)))
    cols = _store_columns(out)
    assert len(ref) == 1484 and cols["name"] == [r["name"] for r in ref]
    assert cols["label"] == [r["label"] for r in ref] and sorted(set(cols["label"])) == list(range(10))
    assert cols["camera"] == [r["view"] for r in ref] and cols["subject"] == [r["subject"] for r in ref]
    assert cols["replication"] == [r["rep"] for r in ref]
    assert cols["frames"] == [len(r["skel"]) for r in ref] and min(cols["frames"]) == 1
    assert [cols["camera"].count(v) for v in (1, 2, 3)] == [516, 504, 464]
    split = cols["splits"]["nwucla-xview"]
    assert split["train"] == [i for i, r in enumerate(ref) if r["view"] in (1, 2)] and len(split["val"]) == 464
    assert cols["layout"] == KINECT_V1_20 and state["params"]["body_policy"] == "as-recorded"
    assert state["params"]["max_bodies"] == 1  # one person: no slot of zeros for the encoders
    longest = int(np.argmax(cols["frames"]))
    for index in (0, longest, cols["name"].index("a02_s09_e04_v02"), 777):
        t = len(ref[index]["skel"])
        np.testing.assert_array_equal(_frames(out, index, [0, t - 1]), ref[index]["skel"][[0, t - 1]].transpose(2, 0, 1))


def test_nwucla_val_split_is_ctrgcns_val_label_pkl(nwucla):
    out, _ = nwucla
    with open(NWUCLA / "val_label.pkl", "rb") as handle:
        entries = _NoClasses(handle).load()
    cols = _store_columns(out)
    val = cols["splits"]["nwucla-xview"]["val"]
    assert sorted(cols["name"][i] for i in val) == sorted(e["file_name"] for e in entries)
    labels = {cols["name"][i]: cols["label"][i] for i in val}
    assert all(labels[e["file_name"]] == e["label"] - 1 for e in entries)


def test_nwucla_malformed_files_are_named(tmp_path):
    raw = tmp_path / "all_sqe"
    raw.mkdir()
    for name in ("a01_s01_e00_v01", "a02_s01_e00_v01"):
        shutil.copy(_need(NWUCLA) / f"{name}.json", raw)
    bad = raw / "a02_s01_e00_v01.json"
    bad.write_text('{"file_name": "a02_s01_e00_v01",\n "skeletons": [[[0, 0,')
    with pytest.raises(GendataError, match=r"a02_s01_e00_v01\.json:2: not JSON"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="nwucla", **QUIET)
    assert not (tmp_path / "s.zarr").exists()
    record = json.loads((raw / "a01_s01_e00_v01.json").read_text())
    bad.write_text(json.dumps(dict(record, label=4)))
    with pytest.raises(GendataError, match=r"a02_s01_e00_v01\.json: field label is 4 but the name's action a02 is label 2"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="nwucla", **QUIET)
    state = gendata(str(raw), str(tmp_path / "s.zarr"), input_format="nwucla", on_error="skip", **QUIET)
    assert [f["file"] for f in state["failed"]] == [str(bad)]
    (raw / "a07_s01_e00_v01.json").write_text("{}")
    with pytest.raises(GendataError, match=r"a07_s01_e00_v01\.json: action code a07 is not one of NW-UCLA's ten"):
        gendata(str(raw), str(tmp_path / "t.zarr"), input_format="nwucla", **QUIET)


def test_a_store_of_one_layout_is_refused_by_encoders_of_another(nwucla):
    from ikem_train.eval.features import EvaluationError, check_store_agrees

    out, _ = nwucla
    with pytest.raises(EvaluationError, match="skeleton layout: store 'kinect_v1_20', checkpoint 'kinect_v2_25'"):
        check_store_agrees(out, {"layout": "kinect_v2_25"}, None)
    assert check_store_agrees(out, {"layout": KINECT_V1_20}, None) == {}


# -- UTD-MHAD ----------------------------------------------------------------------------

def test_utd_joint_order_is_the_datasets_own_file():
    lines = (_need(UTD) / "Skeleton_joint_order.txt").read_text().splitlines()
    utd = [line.split(".", 1)[1].strip(" ;").replace("_", " ") for line in lines if line[:1].isdigit()]
    assert len(utd) == 20
    assert list(utd_mhad.UTD_TO_SDK) == [utd.index(name) for name in SDK_ORDER]


def test_utd_against_the_mat_files(tmp_path_factory):
    from scipy.io import loadmat

    out, _ = _build(tmp_path_factory, "utd-mhad", _need(UTD), "utd")
    perm = list(utd_mhad.UTD_TO_SDK)
    files = sorted(UTD.glob("*.mat"))
    ref = []
    for path in files:
        a, s, t = (int(part[1:]) for part in path.stem.split("_")[:3])
        ref.append(dict(name=path.stem.replace("_skeleton", ""), label=a - 1, subject=s, trial=t))
    cols = _store_columns(out)
    assert len(files) == 861 and cols["name"] == [r["name"] for r in ref]
    assert cols["label"] == [r["label"] for r in ref] and sorted(set(cols["label"])) == list(range(27))
    assert cols["subject"] == [r["subject"] for r in ref] and cols["replication"] == [r["trial"] for r in ref]
    assert cols["splits"]["utd-xsub"]["train"] == [i for i, r in enumerate(ref) if r["subject"] in (1, 3, 5, 7)]
    assert cols["splits"]["utd-xsub"]["val"] == [i for i, r in enumerate(ref) if r["subject"] in (2, 4, 6, 8)]
    for index in (0, 430, 860):
        skel = loadmat(files[index])["d_skel"]  # (20, 3, T), UTD order
        assert cols["frames"][index] == skel.shape[2]
        t = skel.shape[2]
        want = skel[perm][:, :, [0, t - 1]].transpose(1, 2, 0).astype(np.float32)
        np.testing.assert_array_equal(_frames(out, index, [0, t - 1]), want)
    assert 41 <= min(cols["frames"]) and max(cols["frames"]) == 125


def test_utd_a_file_that_is_not_matlab_is_named(tmp_path):
    raw = tmp_path / "Skeleton"
    raw.mkdir()
    shutil.copy(_need(UTD) / "a1_s1_t1_skeleton.mat", raw)
    (raw / "a1_s2_t1_skeleton.mat").write_bytes(b"import os; os.system('echo pwned')\n" * 20)
    with pytest.raises(GendataError, match=r"a1_s2_t1_skeleton\.mat: not a MATLAB file scipy can read"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="utd-mhad", **QUIET)


# -- MSRC-12 -----------------------------------------------------------------------------

def _msrc_reference(csv):
    """Instances of one sequence by the documented rule, written out the slow way."""
    rows = [[float(v) for v in line.split()] for line in csv.read_text().splitlines() if line.strip()]
    while rows and all(v == 0 for v in rows[0][1:]):
        rows.pop(0)
    tags = [line.split(";") for line in csv.with_suffix(".tagstream").read_text().splitlines()[1:] if line.strip()]
    usec = [int(Fraction(int(tick) * 1000) / 49875 + Fraction(1, 2)) for tick, _ in tags]  # round half up
    cuts = [Fraction(a + b, 2) for a, b in zip(usec, usec[1:])]
    instances = [[] for _ in tags]
    for row in rows:
        k = sum(1 for cut in cuts if row[0] > cut)
        instances[k].append(np.array(row[1:], dtype=np.float32).reshape(20, 4)[:, :3].T)
    gesture = int(tags[0][1].split()[0][1:])
    return gesture, instances


def test_msrc12_instances_follow_the_window_rule(tmp_path_factory):
    out, state = _build(tmp_path_factory, "msrc12", _need(MSRC), "msrc")
    cols = _store_columns(out)
    names, frames, labels, subjects, firsts = [], [], [], [], []
    for csv in sorted(MSRC.glob("*.csv")):
        gesture, instances = _msrc_reference(csv)
        person = int(csv.stem.rsplit("_p", 1)[1])
        for k, frames_k in enumerate(instances, 1):
            names.append(f"{csv.stem}_{k}")
            frames.append(len(frames_k))
            labels.append(gesture - 1)
            subjects.append(person)
            firsts.append((frames_k[0], frames_k[-1]))
    assert len(names) == 617 and cols["name"] == names and cols["frames"] == frames
    assert cols["label"] == labels and sorted(set(labels)) == list(range(12)) and cols["subject"] == subjects
    assert cols["splits"]["msrc12-xsub"]["val"] == [i for i, s in enumerate(subjects) if s == 2]
    assert cols["params"]["window_rule"] == msrc12.WINDOW_RULE and cols["layout"] == KINECT_V1_20
    for index in (0, 100, 616, int(np.argmax(frames))):
        t = frames[index]
        got = _frames(out, index, [0, t - 1])
        np.testing.assert_array_equal(got[:, 0], firsts[index][0])
        np.testing.assert_array_equal(got[:, 1], firsts[index][1])


def test_msrc12_tick_rule_is_load_tagstreams():
    # (tick * 1000 + 49875 / 2) / 49875, rounded to the nearest microsecond
    for tick in (394531492480, 0, 49875, 24937, 24938, 10 ** 15 + 7):
        assert msrc12.tick_to_usec(tick) == int(Fraction(tick * 1000 + Fraction(49875, 2), 49875))


def test_msrc12_malformed_files_are_named(tmp_path):
    raw = tmp_path / "msrc"
    raw.mkdir()
    for stem in ("P3_1_1_p01", "P3_1_2_p01"):
        for suffix in (".csv", ".tagstream"):
            shutil.copy(_need(MSRC) / f"{stem}{suffix}", raw)
    csv = raw / "P3_1_2_p01.csv"
    lines = csv.read_text().splitlines()
    lines[40] = lines[40] + " 0.5"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(GendataError, match=r"P3_1_2_p01\.csv:41: 82 fields, expected 81"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="msrc12", **QUIET)
    shutil.copy(MSRC / "P3_1_2_p01.csv", raw)
    tags = raw / "P3_1_2_p01.tagstream"
    tags.write_text(tags.read_text().replace(";G2", ";G7", 1))
    with pytest.raises(GendataError, match=r"P3_1_2_p01\.tagstream:2: gesture G7, but the file name says G2"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="msrc12", **QUIET)
    tags.write_text("XQPCTick;Tag\n12;G2 Duck\nnot a tag\n")
    with pytest.raises(GendataError, match=r"P3_1_2_p01\.tagstream:3: expected tick;G<k> name"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="msrc12", **QUIET)
    (raw / "P3_1_2_p01.tagstream").unlink()
    with pytest.raises(GendataError, match=r"P3_1_2_p01\.csv: its action points P3_1_2_p01\.tagstream are missing"):
        gendata(str(raw), str(tmp_path / "s.zarr"), input_format="msrc12", **QUIET)


# -- the registry ------------------------------------------------------------------------

def test_an_unknown_format_lists_the_known(tmp_path):
    with pytest.raises(GendataError, match="--input-format must be one of ntu, kinect-csv, pyskl, pku-mmd, "
                                           "nwucla, utd-mhad, msrc12, not 'bvh'"):
        gendata(str(tmp_path), str(tmp_path / "s.zarr"), input_format="bvh", **QUIET)


def test_a_new_format_plugs_in_through_the_registry_alone(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    raw = tmp_path / "toy"
    raw.mkdir()
    clips = {}
    for i, t in enumerate((3, 5, 4, 2)):
        clip = rng.normal(size=(t, 20, 3)).round(3)
        clips[f"clip{i}"] = clip
        (raw / f"clip{i}.toy").write_text(f"{i % 2}\n" + "\n".join(" ".join(map(str, f.ravel())) for f in clip) + "\n")
    monkeypatch.setitem(FORMATS, "toy", InputFormat("toy", "toy_format", KINECT_V1_20, ("toy",), ("toy-half",),
                                                    "a folder of .toy files", bodies="as-recorded"))
    out = tmp_path / "toy.zarr"
    state = gendata(str(raw), str(out), input_format="toy", **QUIET)
    cols = _store_columns(out)
    assert cols["name"] == list(clips) and cols["frames"] == [3, 5, 4, 2] and cols["label"] == [0, 1, 0, 1]
    assert cols["splits"] == {"toy-half": {"train": [0, 2], "val": [1, 3]}} and cols["layout"] == KINECT_V1_20
    assert state["params"]["toy_rule"] == "every line a frame" and state["dataset"] == "toy"
    with open_store(out) as store:
        assert store["raw/xyz"].shape == (4, 3, 5, 20, 2)
        np.testing.assert_array_equal(store["raw/xyz"][1][..., 0], clips["clip1"].transpose(2, 0, 1).astype(np.float32))
    bad = raw / "clip2.toy"
    bad.write_text("0\n1 2 3\n")
    with pytest.raises(GendataError, match=r"clip2\.toy:2: expected 60 numbers"):
        gendata(str(raw), str(tmp_path / "again.zarr"), input_format="toy", **QUIET)
