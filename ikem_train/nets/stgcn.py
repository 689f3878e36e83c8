"""Quarter-width ST-GCN encoder (METHOD.md §5; ST-GCN, Yan et al. 2018; CrosSCLR's variant).

Input ``(N, C, T, V, M)`` float (V = 25 in the Kinect v2 layout), output the pooled feature ``h`` of shape
``(N, hidden_dim)`` (mean over the M persons). With the defaults the backbone has
exactly 821,380 parameters (edge-importance masks included, no head).
"""

import torch
from torch import nn

from ikem_train.nets.graph import GRAPH_PARTITIONS, spatial_adjacency

#: The ``model`` config entries that build an :class:`STGCN` (the rest are the pretraining model's).
STGCN_KEYS = ("in_channels", "hidden_channels", "hidden_dim", "dropout", "graph_partition", "layout")


def stgcn_kwargs(model_cfg: dict) -> dict:
    """The :class:`STGCN` keyword arguments in a ``model`` config dict (a checkpoint's
    ``config["model"]``): the :data:`STGCN_KEYS` it has; STGCN's defaults fill the others."""
    return {key: model_cfg[key] for key in STGCN_KEYS if key in model_cfg}


def init_weights(module):
    """The reference initialisation (METHOD.md §5), applied recursively.

    Conv and Linear weights ~ N(0, 0.02), biases 0; BatchNorm weights ~ N(1, 0.02),
    biases 0. Edge-importance masks are left at one.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class GraphConv(nn.Module):
    """Spatial graph convolution: a 1x1 conv to ``out * K`` channels, then
    ``y[n, c, t, w] = sum_k sum_v x[n, k, c, t, v] * A[k, v, w]``.

    Args:
        in_channels, out_channels: channel counts.
        num_subsets: K (3 for the spatial partition).
    """

    def __init__(self, in_channels, out_channels, num_subsets):
        super().__init__()
        self.num_subsets = num_subsets
        self.conv = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)

    def forward(self, x, adjacency):
        n, _, t, v = x.shape
        x = self.conv(x).view(n, self.num_subsets, -1, t, v)  # (N, K, C_out, T, V)
        return torch.einsum("nkctv,kvw->nctw", x, adjacency.to(x.dtype)).contiguous()


class Dropout(nn.Dropout):
    """Inverted dropout, in place: zero each element with probability ``p``, scale the rest by 1 / (1 − p).

    ``nn.Dropout``'s distribution, with the mask drawn by ``rand_like(x) >= p`` instead of
    ``bernoulli_``: on a CPU, torch's ``bernoulli_`` took 13-18 % of a pretraining step
    (bench/bench_train.py --sections kernels). No parameters, nothing in the state dict;
    identity in eval mode or at ``p = 0``; an ``nn.Dropout``, so code that finds dropout
    layers by class (BN recalibration turns them off) finds it.
    """

    def __init__(self, p=0.5):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        super().__init__(float(p), inplace=True)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x.mul_(keep)


class STGCNBlock(nn.Module):
    """GCN -> TCN (BN, ReLU, 9x1 conv with stride, BN, dropout) + residual -> ReLU."""

    def __init__(self, in_channels, out_channels, num_subsets, num_joints, stride=1,
                 dropout=0.0, residual=True, edge_importance=True, kernel_size=9):
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, num_subsets)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), (stride, 1),
                      ((kernel_size - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
            Dropout(dropout),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        shape = (num_subsets, num_joints, num_joints)
        if edge_importance:
            self.edge_importance = nn.Parameter(torch.ones(shape))
        else:
            self.register_buffer("edge_importance", torch.ones(shape), persistent=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, adjacency):
        y = self.tcn(self.gcn(x, adjacency * self.edge_importance))
        if self.residual is not None:
            y = y + self.residual(x)
        return self.relu(y)


class STGCN(nn.Module):
    """The encoder backbone of every modality stream (METHOD.md §5).

    Args:
        in_channels: C of the input (3: xyz).
        hidden_channels: width of blocks 1-4 (16); blocks 5-7 use 2x, 8-9 4x.
        hidden_dim: output width of block 10 and of the pooled feature (256).
        dropout: dropout in blocks 2-10 (0.5).
        edge_importance: learn one (3, 25, 25) mask per block, initialised to ones.
        graph_partition: ``"reference"`` (the reference's graph, truncated at one hop) or
            ``"full"`` (ST-GCN's intended partition); see :mod:`ikem_train.nets.graph`. The
            adjacency is not in the state dict, so checkpoints record it in their config.
        layout: skeleton layout name (:mod:`ikem_data.layouts`; None: Kinect v2): the
            graph's joints, edges and centre.

    Shapes:
        forward(x): x (N, C, T, V, M) float -> h (N, hidden_dim). T is halved (ceil)
        at blocks 5 and 8: 50 -> 25 -> 13.
    """

    def __init__(self, in_channels=3, hidden_channels=16, hidden_dim=256, dropout=0.5,
                 edge_importance=True, graph_partition=GRAPH_PARTITIONS[0], layout=None):
        super().__init__()
        self.graph_partition = graph_partition
        adjacency = spatial_adjacency(graph_partition, layout)
        self.register_buffer("adjacency", torch.from_numpy(adjacency), persistent=False)
        k, v, _ = self.adjacency.shape
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        c = hidden_channels
        # (in, out, temporal stride, dropout, residual)
        spec = [(in_channels, c, 1, 0.0, False), (c, c, 1, dropout, True), (c, c, 1, dropout, True),
                (c, c, 1, dropout, True), (c, 2 * c, 2, dropout, True),
                (2 * c, 2 * c, 1, dropout, True), (2 * c, 2 * c, 1, dropout, True),
                (2 * c, 4 * c, 2, dropout, True), (4 * c, 4 * c, 1, dropout, True),
                (4 * c, hidden_dim, 1, dropout, True)]
        self.blocks = nn.ModuleList(
            STGCNBlock(cin, cout, k, v, stride, p, res, edge_importance)
            for cin, cout, stride, p, res in spec)
        init_weights(self)

    def forward(self, x):
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)  # (N·M, V·C, T), joint-major
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)  # (N·M, C, T, V)
        for block in self.blocks:
            x = block(x, self.adjacency)
        h = x.mean(dim=(2, 3))  # global average pool over (T, V): (N·M, hidden_dim)
        return h.view(n, m, -1).mean(dim=1)  # mean over persons: (N, hidden_dim)
