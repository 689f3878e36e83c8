"""The skeleton layout is data: one table drives preprocessing, bones, rotation axes, the
torso normal and the ST-GCN graph; a store's unknown layout is refused by name."""

import dataclasses

import numpy as np
import pytest
import torch

from ikem_data import layouts
from ikem_data.modalities.stage import StageError, build_modalities
from ikem_data.layouts import KINECT_V2_25, LAYOUTS, get_layout
from ikem_data.modalities.kernels import compute_modalities
from ikem_data.modalities.preprocess import preprocess
from ikem_data.store import open_store
from ikem_train.nets.graph import spatial_adjacency
from ikem_train.data.device_modalities import compute_modalities as torch_modalities
from ikem_train.nets.stgcn import STGCN
from test_stgcn import reference_spatial_graph

KV2 = get_layout(KINECT_V2_25)


@pytest.fixture
def rewired(monkeypatch):
    """Kinect v2 with the left hand tip (22) hung from the elbow (6), not the thumb, in the
    graph, the crossclr bones and the rotation axes, and the centre moved to the head (4)."""
    bones = {name: pairs.copy() for name, pairs in KV2.bone_pairs.items()}
    bones["crossclr"][21, 1] = 5
    axes = KV2.axis_pairs.copy()
    axes[21, 1] = 5
    edges = KV2.graph_edges.copy()
    edges[np.flatnonzero((edges == [21, 22]).all(axis=1))[0]] = [21, 5]
    layout = dataclasses.replace(KV2, name="rewired", center=3, bone_pairs=bones, axis_pairs=axes, graph_edges=edges)
    layout.check()
    monkeypatch.setitem(LAYOUTS, "rewired", layout)
    return layout


def _joints(seed=0):
    return np.random.default_rng(seed).normal(0, 0.3, size=(2, 3, 8, 25, 1)).astype(np.float32)


def test_the_table_drives_the_bones_axes_and_centre_in_both_implementations(rewired):
    x = _joints()
    frames = np.array([40, 60])
    for implementation in ("numba", "torch"):
        if implementation == "numba":
            ours = compute_modalities(x, frames, bone_pairs="crossclr", layout="rewired")
            base = compute_modalities(x, frames, bone_pairs="crossclr")
        else:
            ours = {k: v.numpy() for k, v in torch_modalities(torch.from_numpy(x), frames, "all", "crossclr",
                                                                layout="rewired").items()}
            base = {k: v.numpy() for k, v in torch_modalities(torch.from_numpy(x), frames, "all", "crossclr").items()}
        np.testing.assert_allclose(ours["bone"][:, :, :, 21], x[:, :, :, 21] - x[:, :, :, 5], rtol=1e-6)
        np.testing.assert_allclose(base["bone"][:, :, :, 21], x[:, :, :, 21] - x[:, :, :, 22], rtol=1e-6)
        other = [v for v in range(25) if v != 21]
        np.testing.assert_array_equal(ours["bone"][:, :, :, other], base["bone"][:, :, :, other])
        b = ours["bone"]
        expected_axis = np.cross(b[:, :, :, 21], b[:, :, :, 5], axis=1)
        np.testing.assert_allclose(ours["rotation_axis"][:, :, :, 21], expected_axis, rtol=1e-5, atol=1e-7)
        assert (ours["angular_velocity"][:, :, :, 3] == 0).all()  # zero at the (moved) centre joint
        assert (base["angular_velocity"][:, :, :, 20] == 0).all() and (base["angular_velocity"][:, :, :, 3] != 0).any()


def test_the_table_drives_the_torso_normal(monkeypatch):
    layout = dataclasses.replace(KV2, name="torso", torso=(0, 4, 8))  # spine base instead of spine mid
    monkeypatch.setitem(LAYOUTS, "torso", layout)
    x = _joints(1)
    bone = compute_modalities(x, np.array([50, 50]), ["bone"], layout="torso")["bone"]
    normal = np.cross(x[:, :, :, 0] - x[:, :, :, 8], x[:, :, :, 4] - x[:, :, :, 8], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    np.testing.assert_allclose(bone[:, :, :, 20], normal, rtol=1e-5, atol=1e-6)


def test_the_table_drives_the_graph(rewired):
    a, b = spatial_adjacency("full", "rewired"), spatial_adjacency("full")
    assert a[:, 5, 21].sum() > 0 and b[:, 5, 21].sum() == 0  # elbow -> hand tip is an edge now
    assert a[:, 22, 21].sum() == 0 and b[:, 22, 21].sum() > 0
    torch.testing.assert_close(STGCN(hidden_channels=4, hidden_dim=8, layout="rewired").adjacency,
                               torch.from_numpy(spatial_adjacency("reference", "rewired")))
    # the reference's rule on the rewired edges and centre (the head: only the neck is one hop away)
    ref = spatial_adjacency("reference", "rewired")
    np.testing.assert_array_equal(ref, reference_spatial_graph(rewired.graph_edges, 25, 3).astype(np.float32))
    assert [int((s != 0).sum()) for s in ref] == [25, 46, 2]


def test_the_table_drives_the_preprocessing(monkeypatch):
    layout = dataclasses.replace(KV2, name="neck-centred", center=2)
    monkeypatch.setitem(LAYOUTS, "neck-centred", layout)
    xyz = np.zeros((1, 3, 10, 25, 1), dtype=np.float32)
    xyz[...] = np.random.default_rng(2).normal(size=xyz.shape)
    joint, _ = preprocess(xyz, t_length=10, layout="neck-centred", align=False)
    np.testing.assert_array_equal(joint[:, :, :, 2], 0)  # each body centred on the layout's centre
    assert (preprocess(xyz, t_length=10, align=False)[0][:, :, :, 20] == 0).all()


def test_a_bad_table_or_an_unknown_layout_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="must list joints 0..24 in order"):
        dataclasses.replace(KV2, axis_pairs=KV2.axis_pairs[::-1].copy()).check()
    with pytest.raises(ValueError, match="layout 'nw_ucla_20' is not supported; ikem has tables for: kinect_v2_25, kinect_v1_20"):
        get_layout("nw_ucla_20")
    path = tmp_path / "s.zarr"
    with open_store(path, "w") as store:
        store.create_array("raw/xyz", (2, 3, 5, 20, 1), np.float32)[...] = 1
        store.create_array("raw/frames", (2,), np.int32)[...] = 5
        store.create_array("raw/name", (2,), "S20")[...] = np.array([b"a", b"b"])
        store.attrs["layout"] = "nw_ucla_20"
        store.attrs["gendata"] = {"complete": True, "params": {}}
    with pytest.raises(StageError, match="nw_ucla_20.*not supported.*cannot be computed"):
        build_modalities(path, progress=False)


def test_the_default_layout_is_kinect_v2_for_stores_without_the_attribute():
    assert layouts.DEFAULT_LAYOUT == KINECT_V2_25 == get_layout().name and get_layout(None).num_joints == 25
    assert KV2.center == 20 and KV2.shoulders == (4, 8) and KV2.torso == (1, 4, 8) and len(KV2.graph_edges) == 24
