"""Datasets over a store: batches, lazy per-process handles, worker seeding, bad stores."""

import pickle

import numpy as np
import pytest
import torch

from ikem_data.store import open_store
from ikem_train.data.datasets import (ModalityDataset, PretrainDataset, StoreError, make_loader, read_rows,
                             write_synthetic_store)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "tiny.zarr", n_train=24, n_val=8, frames=20)


def test_read_rows_matches_fancy_indexing(store):
    with open_store(store) as s:
        arr = s["modalities/joint"]
        full = np.asarray(arr[...])
        rows = np.array([0, 1, 2, 7, 9, 10, 31])
        np.testing.assert_array_equal(read_rows(arr, rows), full[rows])


def test_pretrain_batch(store):
    ds = PretrainDataset(store, "ntu60-xsub", shear=-1, crop_ratio=-1)
    assert len(ds) == 24
    batch = ds[(1, np.array([5, 0, 3]))]
    with open_store(store) as s:
        idx = s.split("ntu60-xsub", "train")[[5, 0, 3]]
        joint = np.asarray(s["modalities/joint"][...])[idx]
        frames = np.asarray(s["raw/frames"][...])[idx]
        labels = np.asarray(s["raw/label"][...])[idx]
    assert batch["view1"].shape == (3, 3, 20, 25, 2) and batch["view1"].dtype == torch.float32
    np.testing.assert_array_equal(batch["view1"].numpy(), joint)  # no augmentation: the stored joints
    np.testing.assert_array_equal(batch["frames"].numpy(), frames)
    np.testing.assert_array_equal(batch["label"].numpy(), labels)
    np.testing.assert_array_equal(batch["index"].numpy(), idx)


def test_views_differ_and_epochs_reseed(store):
    ds = PretrainDataset(store, "ntu60-xsub")
    a = ds[(1, np.arange(4))]
    assert not torch.equal(a["view1"], a["view2"])
    ds2 = PretrainDataset(store, "ntu60-xsub")
    assert torch.equal(ds2[(1, np.arange(4))]["view1"], a["view1"])  # same (seed, epoch, worker)
    assert not torch.equal(ds2[(2, np.arange(4))]["view1"], a["view1"])  # new epoch, new stream


def test_dataset_pickles_without_an_open_handle(store):
    ds = PretrainDataset(store, "ntu60-xsub")
    ds[(1, np.arange(2))]
    assert ds._store is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store is None and clone._rng is None


def test_modality_dataset_stacks_in_order(store):
    ds = ModalityDataset(store, "ntu60-xsub", "val", ("bone", "joint"))
    batch = ds[(1, np.array([1, 0]))]
    with open_store(store) as s:
        idx = s.split("ntu60-xsub", "val")[[1, 0]]
        np.testing.assert_array_equal(batch["x"][:, 0].numpy(), np.asarray(s["modalities/bone"][...])[idx])
        np.testing.assert_array_equal(batch["x"][:, 1].numpy(), np.asarray(s["modalities/joint"][...])[idx])


def test_loader_drop_last_and_shuffle_generator(store):
    ds = ModalityDataset(store, "ntu60-xsub", "train", ("joint",))
    gen = torch.Generator().manual_seed(0)
    loader, sampler = make_loader(ds, 10, shuffle=True, drop_last=True, generator=gen)
    state = gen.get_state()
    first = [b["index"].tolist() for b in loader]
    assert len(first) == 2 and all(len(b) == 10 for b in first)
    gen.set_state(state)
    assert [b["index"].tolist() for b in loader] == first
    assert [b["index"].tolist() for b in loader] != first
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_loader(ds, 100, shuffle=True, drop_last=True)


def test_two_workers_open_the_store_themselves(store):
    ds = PretrainDataset(store, "ntu60-xsub")
    loader, sampler = make_loader(ds, 4, shuffle=False, drop_last=True, num_workers=2)
    views = {}
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        views[epoch] = [b["view1"] for b in loader]
    assert len(views[1]) == 6
    assert not torch.equal(views[1][0], views[2][0])  # same samples, new epoch -> new augmentation
    # batches 0 and 1 come from different workers; their streams differ
    plain = ds[(1, np.arange(8))]["view1"]
    assert torch.equal(views[1][0], plain[:4])  # worker 0, epoch 1 == in-process stream (worker 0)
    assert not torch.equal(views[1][1], ds[(1, np.arange(4, 8))]["view1"])
    del loader


def test_bad_stores(tmp_path, store):
    with pytest.raises(KeyError, match="benchmark 'ntu120-xset' not in store .* it has: ntu60-xsub"):
        PretrainDataset(store, "ntu120-xset")
    bare = tmp_path / "bare.zarr"
    with open_store(bare, "w") as s:
        s.create_array("raw/frames", (4,), np.int32)
        s.create_array("raw/label", (4,), np.int16)
    with pytest.raises(StoreError, match="run `ikem-data modalities"):
        PretrainDataset(bare, "ntu60-xsub")
