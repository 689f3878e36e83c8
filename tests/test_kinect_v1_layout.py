"""The Kinect v1 (SDK 1.x, 20 joints) table drives preprocessing, the six modalities and the
ST-GCN graph, checked against the skeleton written out by joint name in this test."""

import numpy as np
import pytest
import torch

from ikem_data.layouts import KINECT_V1_20, get_layout
from ikem_data.modalities.kernels import compute_modalities
from ikem_data.modalities.preprocess import preprocess
from ikem_train.data.device_modalities import compute_modalities as torch_modalities
from ikem_train.nets.graph import spatial_adjacency
from ikem_train.nets.stgcn import STGCN
from test_stgcn import reference_spatial_graph

KV1 = get_layout(KINECT_V1_20)

# The Kinect SDK 1.x skeleton (NUI_SKELETON_POSITION_INDEX order) by name: joint -> parent.
SDK_ORDER = ["hip center", "spine", "shoulder center", "head", "left shoulder", "left elbow", "left wrist",
             "left hand", "right shoulder", "right elbow", "right wrist", "right hand", "left hip", "left knee",
             "left ankle", "left foot", "right hip", "right knee", "right ankle", "right foot"]
PARENT = {"hip center": "spine", "spine": "shoulder center", "head": "shoulder center",
          "left shoulder": "shoulder center", "left elbow": "left shoulder", "left wrist": "left elbow",
          "left hand": "left wrist", "right shoulder": "shoulder center", "right elbow": "right shoulder",
          "right wrist": "right elbow", "right hand": "right wrist", "left hip": "hip center",
          "left knee": "left hip", "left ankle": "left knee", "left foot": "left ankle",
          "right hip": "hip center", "right knee": "right hip", "right ankle": "right knee",
          "right foot": "right ankle"}


def _index(name):
    return SDK_ORDER.index(name)


def test_the_table_is_the_sdk_skeleton():
    assert KV1.joints == tuple(SDK_ORDER) and KV1.num_joints == 20
    assert KV1.center == _index("shoulder center") and KV1.base == _index("hip center")
    assert KV1.shoulders == (_index("left shoulder"), _index("right shoulder"))
    assert KV1.torso == (_index("spine"), _index("left shoulder"), _index("right shoulder"))
    parents = [_index(PARENT.get(name, name)) for name in SDK_ORDER]  # the root is its own parent
    for pairs in (*KV1.bone_pairs.values(), KV1.axis_pairs):
        assert pairs[:, 1].tolist() == parents
    edges = {frozenset((_index(a), _index(b))) for a, b in PARENT.items()}
    assert {frozenset(e) for e in KV1.graph_edges.tolist()} == edges and len(KV1.graph_edges) == 19


def _joints(seed=0, frames=8):
    return np.random.default_rng(seed).normal(0, 0.3, size=(2, 3, frames, 20, 1)).astype(np.float32)


@pytest.mark.parametrize("bone_set", ["ikem", "crossclr"])
def test_bones_axes_and_the_root_follow_the_tree_in_both_implementations(bone_set):
    x = _joints()
    frames = np.array([40, 60])
    root = KV1.center
    numba = compute_modalities(x, frames, bone_pairs=bone_set, layout=KINECT_V1_20)
    gpu = {k: v.numpy() for k, v in torch_modalities(torch.from_numpy(x), frames, "all", bone_set,
                                                       layout=KINECT_V1_20).items()}
    for ours in (numba, gpu):
        bone = ours["bone"]
        for name, parent in PARENT.items():
            v, u = _index(name), _index(parent)
            np.testing.assert_allclose(bone[:, :, :, v], x[:, :, :, v] - x[:, :, :, u], rtol=1e-5, atol=1e-7)
            # the un-normalised cross product with the parent bone (METHOD.md §3.5)
            np.testing.assert_allclose(ours["rotation_axis"][:, :, :, v],
                                       np.cross(bone[:, :, :, v], bone[:, :, :, u], axis=1), rtol=1e-4, atol=1e-6)
        if bone_set == "ikem":  # the root bone is the unit torso normal (METHOD.md §3.4)
            mid, left, right = (_index(n) for n in ("spine", "left shoulder", "right shoulder"))
            normal = _unit(np.cross(x[:, :, :, mid] - x[:, :, :, right], x[:, :, :, left] - x[:, :, :, right], axis=1))
            np.testing.assert_allclose(bone[:, :, :, root], normal, rtol=1e-5, atol=1e-6)
        else:
            assert (bone[:, :, :, root] == 0).all()
        np.testing.assert_allclose(ours["rotation_axis"][:, :, :, root], 0, atol=1e-6)  # b_root x b_root
        np.testing.assert_allclose(ours["angular_velocity"][:, :, :, root], 0, atol=1e-6)
    for name in numba:
        np.testing.assert_allclose(gpu[name], numba[name], rtol=1e-4, atol=1e-5, err_msg=name)


def _unit(v):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > 0, v / np.where(norm > 0, norm, 1), 0)


def test_preprocessing_centres_on_the_shoulder_centre_and_levels_the_shoulders():
    x = _joints(3, frames=12)
    x[:, :, :, _index("hip center")] += 1.0  # every frame valid (its base joint is present)
    joint, _ = preprocess(x, t_length=12, rotation_sign="per_frame", layout=KINECT_V1_20)
    np.testing.assert_allclose(joint[:, :, :, _index("shoulder center")], 0, atol=1e-6)
    across = joint[:, :, :, _index("right shoulder")] - joint[:, :, :, _index("left shoulder")]
    # each frame's shoulder vector turned onto +x: z zero (up to the reference's 1e-4 in
    # cos = x / (|s| + 1e-4)), x its horizontal length
    assert (np.abs(across[:, 2]) < 0.02 * np.abs(across[:, 0])).all()
    raw = x[:, :, :, _index("right shoulder")] - x[:, :, :, _index("left shoulder")]
    np.testing.assert_allclose(across[:, 0], np.hypot(raw[:, 0], raw[:, 2]), rtol=1e-3, atol=1e-4)


def test_the_graph_is_the_reference_rule_on_the_sdk_tree():
    ref = spatial_adjacency("reference", KINECT_V1_20)
    np.testing.assert_array_equal(ref, reference_spatial_graph(KV1.graph_edges, 20, KV1.center).astype(np.float32))
    # the shoulder centre's neighbours: spine, head and both shoulders (one hop)
    neighbours = {_index(n) for n in ("spine", "head", "left shoulder", "right shoulder")}
    assert {int(j) for j in np.flatnonzero(ref.sum(axis=0)[:, KV1.center]) if j != KV1.center} == neighbours
    net = STGCN(hidden_channels=4, hidden_dim=8, layout=KINECT_V1_20)
    assert net(torch.zeros(2, 3, 12, 20, 2)).shape == (2, 8)
    with pytest.raises(Exception):
        net(torch.zeros(2, 3, 12, 25, 2))
