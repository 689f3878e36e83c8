"""The NTU RGB+D skeleton graph for ST-GCN: spatial partition into 3 subsets.

Two partitions of the same column-normalised graph (METHOD.md §5, §11 item 20):

- ``reference`` (the default): what the reference code builds, ``Graph(layout='ntu-rgb+d',
  strategy='spatial')`` with its default ``max_hop=1``. Hop distances are filled only up
  to one hop, so every joint more than one hop from the centre is at distance ``inf``;
  the spatial rule then compares ``inf == inf`` (true) for neighbours that are both far,
  and those pairs join subset 1. Non-zeros per subset: 25 / 40 / 8. The paper's accuracy
  comes from this graph.
- ``full``: ST-GCN's intended "spatial configuration partitioning" (Yan et al., AAAI 2018
  §3.3) on true hop distances: 25 / 24 / 24, neighbour subsets ordered centripetal then
  centrifugal. A fix beyond the reference; every checkpoint written before the switch
  existed was trained with it.
"""

import numpy as np

from ikem_data.layouts import get_layout

#: Names of ``model.graph_partition``; the first is the default.
GRAPH_PARTITIONS = ("reference", "full")
#: The partition of checkpoints whose config predates ``model.graph_partition``.
LEGACY_GRAPH_PARTITION = "full"


def hop_distance(edges, num_nodes, max_hop=None):
    """Shortest-path hop count between every pair of joints.

    Args:
        edges: (E, 2) int array of undirected 0-based joint pairs.
        num_nodes: number of joints V.
        max_hop: distances above it become ``inf``, as ST-GCN's ``get_hop_distance``
            leaves them (None: no cut).

    Returns:
        (V, V) float64 array; ``inf`` for unreachable pairs and pairs beyond ``max_hop``.
    """
    dist = np.full((num_nodes, num_nodes), np.inf)
    np.fill_diagonal(dist, 0.0)
    for v, u in np.asarray(edges):
        dist[v, u] = dist[u, v] = 1.0
    for k in range(num_nodes):  # Floyd-Warshall: 25 nodes, trivial cost
        dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
    if max_hop is not None:
        dist[dist > max_hop] = np.inf
    return dist


def check_partition(partition):
    """Return ``partition`` if it is one of :data:`GRAPH_PARTITIONS`.

    Raises:
        ValueError: any other value; the message lists the valid ones.
    """
    if partition not in GRAPH_PARTITIONS:
        raise ValueError(f"unknown graph_partition {partition!r}; valid: {', '.join(GRAPH_PARTITIONS)}")
    return partition


def spatial_adjacency(partition="reference", layout=None, *, edges=None, num_nodes=None, center=None):
    """The (3, V, V) spatial-partition adjacency used by every ST-GCN block.

    ``A[k, v, w]`` is the weight with which joint v feeds joint w in subset k, so a
    graph convolution reads ``y[..., w] = sum_k sum_v x_k[..., v] * A[k, v, w]``. The
    adjacency with self-loops is column-normalised (``Â D⁻¹``, D = column sums), then
    split by ``d(x)``, joint x's hop distance to the centre:

    - ``reference``: d cut at one hop (``inf`` beyond). k=0 self-loops; k=1 neighbours
      with ``d(v) >= d(w)`` (the reference's ``a_root + a_close``, ``inf == inf``
      included); k=2 neighbours with ``d(v) < d(w)`` (``a_further``).
    - ``full``: true d. k=0 ``d(v) == d(w)`` (only self-loops, the graph is a tree);
      k=1 ``d(v) < d(w)`` (centripetal); k=2 ``d(v) > d(w)`` (centrifugal).

    Summing the subsets gives ``Â D⁻¹`` back in both.

    Args:
        partition: ``"reference"`` or ``"full"`` (module docstring).
        layout: skeleton layout name or :class:`~ikem_data.layouts.Layout` (None: Kinect
            v2): its graph edges, joint count and centre joint (spine-shoulder, joint 21).
        edges, num_nodes, center: override the layout's (a graph of one's own).

    Returns:
        (3, V, V) float32 numpy array.

    Raises:
        ValueError: an unknown partition.
    """
    check_partition(partition)
    layout = get_layout(layout)
    edges = layout.graph_edges if edges is None else edges
    num_nodes = layout.num_joints if num_nodes is None else num_nodes
    center = layout.center if center is None else center
    dist = hop_distance(edges, num_nodes, max_hop=1 if partition == "reference" else None)
    linked = dist <= 1  # max_hop = 1, self-loops included
    norm = linked / linked.sum(axis=0, keepdims=True)  # column-normalised
    d_v = dist[:, center][:, None]  # the input joint's distance to the centre
    d_w = dist[:, center][None, :]  # the output joint's
    if partition == "reference":
        neighbour = linked & ~np.eye(num_nodes, dtype=bool)
        subsets = (np.eye(num_nodes, dtype=bool), neighbour & (d_v >= d_w), neighbour & (d_v < d_w))
    else:
        subsets = (linked & (d_v == d_w), linked & (d_v < d_w), linked & (d_v > d_w))
    return np.stack([np.where(s, norm, 0.0) for s in subsets]).astype(np.float32)
