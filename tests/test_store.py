"""The store API: zarr and hdf5 back ends behave the same (DESIGN.md §3)."""

import pickle

import numpy as np
import pytest

from ikem_data.names import STORE_FORMAT, STORE_VERSION
from ikem_data.store import open_store


@pytest.fixture(params=["s.zarr", "s.h5"])
def store_path(request, tmp_path):
    return tmp_path / request.param


def test_create_write_read_roundtrip(store_path):
    rng = np.random.default_rng(0)
    block = rng.normal(size=(5, 3, 7, 25, 2)).astype(np.float32)
    with open_store(store_path, "w") as store:
        assert store.kind == ("hdf5" if store_path.suffix == ".h5" else "zarr")
        xyz = store.create_array("raw/xyz", (9, 3, 7, 25, 2), np.float32, chunks=(4, 3, 7, 25, 2))
        xyz[2:7] = block
        assert xyz.shape == (9, 3, 7, 25, 2) and xyz.dtype == np.float32
        store.create_array("splits/ntu60-xsub/train", (3,), np.int64)[:] = [0, 4, 8]
        store.create_array("splits/ntu60-xsub/val", (0,), np.int64)
        store.create_array("splits/custom/val", (2,), np.int64)[:] = [1, 2]
        store.create_array("splits/custom/train", (1,), np.int64)[:] = [5]
    with open_store(store_path, "r") as store:
        assert "raw/xyz" in store and "raw" in store and "raw/nope" not in store
        data = store["raw/xyz"][:]
        np.testing.assert_array_equal(data[2:7], block)
        assert not data[:2].any() and not data[7:].any()
        assert store.benchmarks() == ["custom", "ntu60-xsub"]
        train = store.split("ntu60-xsub", "train")
        assert train.dtype == np.int64 and train.tolist() == [0, 4, 8]
        assert store.split("ntu60-xsub", "val").tolist() == []
        with pytest.raises(KeyError, match="custom, ntu60-xsub"):
            store.split("ntu120-xset", "train")
        with pytest.raises(ValueError):
            store.split("custom", "test")
        with pytest.raises(KeyError):
            store["raw/nope"]


def test_attrs_are_json_and_nested(store_path):
    with open_store(store_path, "w") as store:
        store.attrs["gendata"] = {"complete": np.bool_(False), "params": {"workers": np.int64(2), "x": (1, 2)},
                                  "skipped": np.int32(3), "scale": np.float32(0.5)}
        with pytest.raises(TypeError):
            store.attrs["bad"] = object()
    with open_store(store_path, "r+") as store:
        attrs = store.attrs
        assert attrs["format"] == STORE_FORMAT and attrs["version"] == STORE_VERSION
        assert "ikem_version" in attrs
        g = attrs["gendata"]
        assert g == {"complete": False, "params": {"workers": 2, "x": [1, 2]}, "skipped": 3, "scale": 0.5}
        assert type(g["params"]["workers"]) is int
        g["complete"] = True
        store.attrs["gendata"] = g
        assert store.is_complete("gendata") and not store.is_complete("modalities")
    with open_store(store_path, check=False) as store:  # a "complete" stage without arrays fails the check
        assert store.attrs["gendata"]["complete"] is True
        assert store.stage("modalities") is None


def test_names_roundtrip(store_path):
    names = ["S001C001P001R001A001", "S017C003P020R002A055", "short"]
    with open_store(store_path, "w") as store:
        arr = store.create_array("raw/name", (3,), "S20", chunks=(2,))
        arr[:] = np.array(names, dtype="S20")
    with open_store(store_path) as store:
        assert store.names() == names
        assert store.names(1, 2) == names[1:2]
        raw = store["raw/name"][:]
        assert [bytes(v).decode() for v in raw] == names


def test_zarr_and_hdf5_hold_the_same(tmp_path):
    values = np.arange(24, dtype=np.int16).reshape(6, 4)
    for name in ("a.zarr", "a.h5"):
        with open_store(tmp_path / name, "w") as store:
            store.create_array("x/y/z", values.shape, np.int16, chunks=(2, 4))[:] = values
    with open_store(tmp_path / "a.zarr") as z, open_store(tmp_path / "a.h5") as h:
        np.testing.assert_array_equal(z["x/y/z"][:], h["x/y/z"][:])
        assert z["x/y/z"].dtype == h["x/y/z"].dtype == np.int16


def test_overwrite_and_readonly(store_path):
    with open_store(store_path, "w") as store:
        store.create_array("raw/label", (4,), np.int16)
        with pytest.raises(ValueError, match="already exists"):
            store.create_array("raw/label", (4,), np.int16)
        store.create_array("raw/label", (2,), np.int16, overwrite=True)
        assert store["raw/label"].shape == (2,)
    with open_store(store_path, "r") as store:
        with pytest.raises(ValueError, match="read-only"):
            store.create_array("raw/other", (1,), np.int16)


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        open_store(tmp_path / "nope.zarr")
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "nope.h5", "r+")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="photos"):
        open_store(folder)
    with pytest.raises(ValueError, match="not an ikem store"):
        open_store(folder, "w")
    assert (folder / "keep.txt").read_text() == "mine"
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="bogus.h5"):
        open_store(bogus)
    with pytest.raises(ValueError):
        open_store(tmp_path / "x.zarr", "a")


def test_other_format_refused(tmp_path):
    import h5py
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="other.zarr"):
        open_store(tmp_path / "other.zarr")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["foo"] = 1
    with pytest.raises(ValueError, match="other.h5"):
        open_store(tmp_path / "other.h5")


def test_pickles_as_reopen(store_path):
    with open_store(store_path, "w") as store:
        store.create_array("raw/frames", (3,), np.int32)[:] = [5, 6, 7]
    store = open_store(store_path)
    clone = pickle.loads(pickle.dumps(store))
    store.close()
    assert clone.mode == "r" and clone["raw/frames"][:].tolist() == [5, 6, 7]
    clone.close()


def test_read_into_and_writer(store_path):
    with open_store(store_path, "w") as store:
        data = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
        store.create_array("a/x", data.shape, np.float32, chunks=(2, 3, 4))
        store.writer("a/x")[1:5] = data[1:5]
        out = np.full((3, 3, 4), -1, dtype=np.float32)
        assert store.read_into("a/x", 2, 5, out) is out
        np.testing.assert_array_equal(out, data[2:5])
        np.testing.assert_array_equal(store["a/x"][0], 0)        # never written: fill value
        with pytest.raises(ValueError, match="out must be"):
            store.read_into("a/x", 0, 2, out)
