"""ST-GCN encoder and NTU graph (METHOD.md §5, §11 item 20)."""

import numpy as np
import pytest
import torch

from ikem_data.layouts import get_layout
from ikem_train.nets.graph import hop_distance, spatial_adjacency
from ikem_train.nets.stgcn import STGCN

KV2 = get_layout("kinect_v2_25")
GRAPH_EDGES, NUM_JOINTS, SPINE_SHOULDER = KV2.graph_edges, KV2.num_joints, KV2.center


def reference_spatial_graph(edges, num_node, center, max_hop=1):
    """A literal, slow transcription of the reference's ``Graph(strategy='spatial')``.

    Hop distances from powers of the adjacency matrix, filled only up to ``max_hop``
    (everything else stays ``inf``); ``Â D⁻¹`` by a diagonal matrix of inverse column
    sums; then, for ``A[j, i]`` at hop distance ``hop``, the three-way comparison of
    ``d(j)`` and ``d(i)`` (``inf == inf`` is true) into root, close and further.
    """
    adj = np.zeros((num_node, num_node))
    for i, j in edges:
        adj[j, i] = 1
        adj[i, j] = 1
    hop_dis = np.zeros((num_node, num_node)) + np.inf
    reach = [np.linalg.matrix_power(adj, d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        hop_dis[reach[d]] = d
    adjacency = np.zeros((num_node, num_node))
    for hop in range(max_hop + 1):
        adjacency[hop_dis == hop] = 1
    col = adjacency.sum(axis=0)
    dn = np.zeros((num_node, num_node))
    for i in range(num_node):
        if col[i] > 0:
            dn[i, i] = col[i] ** (-1)
    normalized = np.dot(adjacency, dn)
    subsets = []
    for hop in range(max_hop + 1):
        root, close, further = (np.zeros((num_node, num_node)) for _ in range(3))
        for i in range(num_node):
            for j in range(num_node):
                if hop_dis[j, i] == hop:
                    if hop_dis[j, center] == hop_dis[i, center]:
                        root[j, i] = normalized[j, i]
                    elif hop_dis[j, center] > hop_dis[i, center]:
                        close[j, i] = normalized[j, i]
                    else:
                        further[j, i] = normalized[j, i]
        if hop == 0:
            subsets.append(root)
        else:
            subsets.append(root + close)
            subsets.append(further)
    return np.stack(subsets)


def test_reference_partition_is_the_reference_graph_bit_for_bit():
    a = spatial_adjacency("reference")
    expected = reference_spatial_graph(GRAPH_EDGES, NUM_JOINTS, SPINE_SHOULDER).astype(np.float32)
    assert a.dtype == np.float32 and a.shape == (3, 25, 25)
    np.testing.assert_array_equal(a, expected)
    assert [int((s != 0).sum()) for s in a] == [25, 40, 8]
    assert spatial_adjacency().tobytes() == a.tobytes()  # the default
    # 20 joints lie beyond the centre's 4 neighbours and are all at "distance" inf
    d = hop_distance(GRAPH_EDGES, NUM_JOINTS, max_hop=1)[:, SPINE_SHOULDER]
    assert int(np.isinf(d).sum()) == 20
    # subset 2 holds exactly the 8 links that leave a finite distance outwards
    v, w = np.nonzero(a[2])
    assert sorted(zip(v.tolist(), w.tolist())) == sorted(
        [(SPINE_SHOULDER, n) for n in (1, 2, 4, 8)] + [(1, 0), (2, 3), (4, 5), (8, 9)])


def test_reference_partition_splits_a_non_tree_graph_like_the_reference():
    # a ring with a tail, centre 0, max_hop 1: equal finite distances (a triangle) too
    edges = np.array([(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 5)])
    a = spatial_adjacency("reference", edges=edges, num_nodes=6, center=0)
    np.testing.assert_array_equal(a, reference_spatial_graph(edges, 6, 0).astype(np.float32))


def test_full_partition_has_true_hop_distances():
    a = spatial_adjacency("full")
    assert [int((s != 0).sum()) for s in a] == [25, 24, 24]
    assert not (spatial_adjacency("reference") == a).all()
    with pytest.raises(ValueError, match="valid: reference, full"):
        spatial_adjacency("truncated")


def test_backbone_has_821380_parameters():
    model = STGCN()
    assert sum(p.numel() for p in model.parameters()) == 821_380
    # edge importance is 10 learnable (3, 25, 25) masks initialised to one
    masks = [b.edge_importance for b in model.blocks]
    assert len(masks) == 10 and all(m.shape == (3, 25, 25) and bool((m == 1).all()) for m in masks)


@pytest.mark.parametrize("partition", ["reference", "full"])
def test_both_partitions_sum_to_the_column_normalised_graph(partition):
    a = spatial_adjacency(partition).sum(axis=0)
    np.testing.assert_allclose(a.sum(axis=0), np.ones(25), atol=1e-6)  # columns sum to 1
    # spine-shoulder (centre) has 4 neighbours + itself: each weighs 1/5 in its column
    np.testing.assert_allclose(a[:, SPINE_SHOULDER][a[:, SPINE_SHOULDER] > 0], [0.2] * 5, atol=1e-6)
    np.testing.assert_array_equal(a != 0, hop_distance(GRAPH_EDGES, NUM_JOINTS) <= 1)


def test_full_partition_splits_each_edge_by_direction():
    a = spatial_adjacency("full")
    # subset 0 is exactly the diagonal: a tree has no two neighbours equally far from the centre
    np.testing.assert_array_equal(a[0] != 0, np.eye(25, dtype=bool))
    # its neighbours are all farther from the centre: subset 2, none in subset 1
    assert a[1][:, SPINE_SHOULDER].sum() == 0
    d = hop_distance(GRAPH_EDGES, NUM_JOINTS)
    for v, u in GRAPH_EDGES:  # each edge is in subset 1 one way and subset 2 the other
        near, far = (v, u) if d[v, SPINE_SHOULDER] < d[u, SPINE_SHOULDER] else (u, v)
        assert a[1, near, far] > 0 and a[2, far, near] > 0


def test_forward_shapes_and_person_mean():
    torch.manual_seed(0)
    model = STGCN(hidden_channels=4, hidden_dim=8).eval()
    x = torch.randn(2, 3, 20, 25, 2)
    h = model(x)
    assert h.shape == (2, 8)
    # swapping the two persons leaves the mean-pooled feature unchanged
    torch.testing.assert_close(model(x.flip(-1)), h, rtol=1e-5, atol=1e-6)
    # temporal strides: 20 -> 10 -> 5
    feats = []
    model.blocks[-1].register_forward_hook(lambda m, i, o: feats.append(o.shape))
    model(x)
    assert feats[0] == (4, 8, 5, 25)


def test_gradients_reach_every_parameter():
    model = STGCN(hidden_channels=4, hidden_dim=8, dropout=0.0)
    model(torch.randn(2, 3, 12, 25, 1)).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
