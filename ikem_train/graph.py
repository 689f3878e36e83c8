"""The NTU RGB+D skeleton graph for ST-GCN: spatial partition into 3 subsets.

Source: METHOD.md §5 (layout ``ntu-rgb+d``, strategy ``spatial``, max_hop 1, centre =
spine-shoulder), ST-GCN (Yan et al., AAAI 2018) §3.3 "spatial configuration partitioning".
"""

import numpy as np

from ikem_data.bones import GRAPH_EDGES, NUM_JOINTS, SPINE_SHOULDER


def hop_distance(edges=GRAPH_EDGES, num_nodes=NUM_JOINTS):
    """Shortest-path hop count between every pair of joints.

    Args:
        edges: (E, 2) int array of undirected 0-based joint pairs.
        num_nodes: number of joints V.

    Returns:
        (V, V) float64 array; ``inf`` for unreachable pairs.
    """
    dist = np.full((num_nodes, num_nodes), np.inf)
    np.fill_diagonal(dist, 0.0)
    for v, u in np.asarray(edges):
        dist[v, u] = dist[u, v] = 1.0
    for k in range(num_nodes):  # Floyd-Warshall: 25 nodes, trivial cost
        dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
    return dist


def spatial_adjacency(edges=GRAPH_EDGES, num_nodes=NUM_JOINTS, center=SPINE_SHOULDER):
    """The (3, V, V) spatial-partition adjacency used by every ST-GCN block.

    ``A[k, v, w]`` is the weight with which joint v feeds joint w in subset k, so a
    graph convolution reads ``y[..., w] = sum_k sum_v x_k[..., v] * A[k, v, w]``. The
    adjacency with self-loops is column-normalised (``Â D⁻¹``, D = column sums), then
    split by the neighbour's distance to the centre joint relative to w's:
    k=0 the same distance (the joint itself), k=1 nearer the centre (centripetal),
    k=2 farther from it (centrifugal). Summing the subsets gives ``Â D⁻¹`` back.

    Args:
        edges: (E, 2) int array of undirected 0-based joint pairs (no self-loops).
        num_nodes: V.
        center: 0-based index of the centre joint (spine-shoulder, joint 21 1-based).

    Returns:
        (3, V, V) float32 numpy array.
    """
    dist = hop_distance(edges, num_nodes)
    linked = dist <= 1  # max_hop = 1, self-loops included
    norm = linked / linked.sum(axis=0, keepdims=True)  # column-normalised
    to_center = dist[:, center]
    a = np.zeros((3, num_nodes, num_nodes))
    for v in range(num_nodes):
        for w in range(num_nodes):
            if not linked[v, w]:
                continue
            if to_center[v] == to_center[w]:
                k = 0
            elif to_center[v] < to_center[w]:
                k = 1
            else:
                k = 2
            a[k, v, w] = norm[v, w]
    return a.astype(np.float32)
