"""ST-GCN encoder and NTU graph (METHOD.md §5)."""

import numpy as np
import torch

from ikem_data.bones import GRAPH_EDGES, SPINE_SHOULDER
from ikem_train.graph import hop_distance, spatial_adjacency
from ikem_train.stgcn import STGCN


def test_backbone_has_821380_parameters():
    model = STGCN()
    assert sum(p.numel() for p in model.parameters()) == 821_380
    # edge importance is 10 learnable (3, 25, 25) masks initialised to one
    masks = [b.edge_importance for b in model.blocks]
    assert len(masks) == 10 and all(m.shape == (3, 25, 25) and bool((m == 1).all()) for m in masks)


def test_adjacency_partition_sums_to_column_normalised_graph():
    a = spatial_adjacency()
    assert a.shape == (3, 25, 25)
    full = a.sum(axis=0)
    np.testing.assert_allclose(full.sum(axis=0), np.ones(25), atol=1e-6)  # columns sum to 1
    # subset 0 is exactly the diagonal: a tree has no two neighbours equally far from the centre
    np.testing.assert_array_equal(a[0] != 0, np.eye(25, dtype=bool))
    # spine-shoulder (centre) has 4 neighbours + itself: each weighs 1/5 in its column
    np.testing.assert_allclose(full[:, SPINE_SHOULDER][full[:, SPINE_SHOULDER] > 0], [0.2] * 5, atol=1e-6)
    # its neighbours are all farther from the centre: subset 2, none in subset 1
    assert a[1][:, SPINE_SHOULDER].sum() == 0
    d = hop_distance()
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
