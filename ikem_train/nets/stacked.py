"""Several encoders of one shape run as one batched computation (issue 20).

A six-modality teacher holds six query and six key ST-GCNs of identical shape. Run one
after another, each step is six small convolutions per layer (kernel launches on a GPU,
small GEMMs on a CPU). :func:`stacked_forward` runs G such encoders at once: the G inputs
are laid side by side along the channel axis, every convolution becomes one grouped
convolution (``groups=G``), every BatchNorm one BatchNorm over ``G·C`` channels, the graph
product one batched einsum and the heads one batched matmul.

The parameters stay where they are: in each encoder's own modules, so state dicts,
checkpoints, optimizers and momentum updates do not change. Each call concatenates the G
weights of a layer (autograd splits the gradient back), and BatchNorm running statistics
are computed on the concatenation and copied back into each module. The math is that of
the encoders run one by one; only dropout draws its masks in a different order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ikem_train.nets.stgcn import STGCN, GraphConv, STGCNBlock


def stacked_forward(encoders, inputs):
    """Run G encoders of identical shape on their own inputs in one batched pass.

    Args:
        encoders: G ``ikem_train.methods.model.Encoder`` modules (an ST-GCN ``backbone``
            and a ``head``) with parameters of the same shapes, all in the same train/eval
            mode; G >= 1.
        inputs: G tensors ``(N, C, T, V, M)`` of one shape and dtype, ``inputs[g]`` for
            ``encoders[g]``.

    Returns:
        a list of G pairs ``(z, h)``: ``z = head(h)`` (N, out_dim) and the pooled feature
        ``h`` (N, hidden_dim), as each ``encoders[g](inputs[g])`` would return them.

    Raises:
        ValueError: the encoders differ in shape, class or mode, or the inputs in shape.
    """
    _check_alike(encoders, inputs)
    backbones = [e.backbone for e in encoders]
    h = _backbones(backbones, torch.stack(inputs, dim=1))  # (G, N, hidden_dim)
    z = _apply([e.head for e in encoders], h)
    return [(z[g], h[g]) for g in range(len(encoders))]


def _check_alike(encoders, inputs):
    if not encoders or len(encoders) != len(inputs):
        raise ValueError(f"need one input per encoder, got {len(inputs)} inputs for {len(encoders)} encoders")
    first = encoders[0]
    shapes = [p.shape for p in first.parameters()]
    for e in encoders[1:]:
        if type(e) is not type(first) or [p.shape for p in e.parameters()] != shapes:
            raise ValueError("stacked encoders must have identical structure and parameter shapes")
        if [m.training for m in e.modules()] != [m.training for m in first.modules()]:
            raise ValueError("stacked encoders must be in the same train/eval mode")
    if any(x.shape != inputs[0].shape or x.dtype != inputs[0].dtype for x in inputs):
        raise ValueError(f"stacked inputs must share shape and dtype, got {[tuple(x.shape) for x in inputs]}")


def _backbones(backbones: list[STGCN], x):
    """(N, G, C, T, V, M) -> (G, N, hidden_dim): STGCN.forward of each group."""
    n, g, c, t, v, m = x.shape
    x = x.permute(0, 5, 1, 4, 2, 3).reshape(n * m, g * v * c, t)  # each group joint-major, as STGCN
    x = _apply([b.data_bn for b in backbones], x)
    x = x.view(n * m, g, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, g * c, t, v)  # (N·M, G·C, T, V)
    for blocks in zip(*(b.blocks for b in backbones)):
        x = _block(list(blocks), x, backbones[0].adjacency)
    h = x.mean(dim=(2, 3))  # (N·M, G·hidden)
    return h.view(n, m, g, -1).mean(dim=1).transpose(0, 1)  # mean over persons: (G, N, hidden)


def _block(blocks: list[STGCNBlock], x, adjacency):
    """STGCNBlock.forward of G blocks on (N·M, G·C_in, T, V)."""
    importance = torch.stack([b.edge_importance for b in blocks])  # (G, K, V, V)
    y = _graph_conv([b.gcn for b in blocks], x, adjacency * importance)
    y = _apply([b.tcn for b in blocks], y)
    if blocks[0].residual is not None:
        y = y + _apply([b.residual for b in blocks], x)
    return blocks[0].relu(y)


def _graph_conv(convs: list[GraphConv], x, adjacency):
    """GraphConv.forward of G convs; ``adjacency`` (G, K, V, V), one graph per group."""
    g, k = len(convs), convs[0].num_subsets
    nm, _, t, v = x.shape
    x = _apply([c.conv for c in convs], x).view(nm, g, k, -1, t, v)  # (N·M, G, K, C_out, T, V)
    return torch.einsum("ngkctv,gkvw->ngctw", x, adjacency.to(x.dtype)).reshape(nm, -1, t, v)


def _apply(modules, x):
    """The G modules (one class, one shape) applied to x, their groups side by side.

    Channel-wise layers take x as (N, G·C, ...); ``nn.Linear`` takes (G, N, in).
    """
    first = modules[0]
    if isinstance(first, nn.Sequential):
        for layers in zip(*modules):
            x = _apply(list(layers), x)
        return x
    if isinstance(first, nn.Conv2d):
        weight = torch.cat([c.weight for c in modules])  # (G·C_out, C_in/groups, kT, kV)
        bias = None if first.bias is None else torch.cat([c.bias for c in modules])
        return F.conv2d(x, weight, bias, first.stride, first.padding, first.dilation,
                        first.groups * len(modules))
    if isinstance(first, nn.Linear):
        weight = torch.stack([lin.weight for lin in modules]).transpose(1, 2)  # (G, in, out)
        if first.bias is None:
            return torch.bmm(x, weight)
        return torch.baddbmm(torch.stack([lin.bias for lin in modules]).unsqueeze(1), x, weight)
    if isinstance(first, nn.modules.batchnorm._BatchNorm):
        return _batch_norm(modules, x)
    if isinstance(first, (nn.ReLU, nn.Dropout, nn.Identity)):
        return first(x)  # elementwise: one call covers every group
    raise TypeError(f"stacked_forward cannot stack {type(first).__name__}")


_BN_TEMPLATES: dict = {}


def _batch_norm(bns, x):
    """G BatchNorms of C channels as one over G·C channels, running statistics written back.

    The layer is called through a module of the same class (BatchNorm, torch's
    SyncBatchNorm or ikem's CPUSyncBatchNorm), so synchronized statistics under torchrun
    stay synchronized; per channel, BatchNorm over the concatenation is each BatchNorm.
    """
    first = bns[0]
    key = (type(first), len(bns) * first.num_features, first.eps, first.momentum, first.affine,
           first.track_running_stats)
    template = _BN_TEMPLATES.get(key)
    if template is None:
        template = _BN_TEMPLATES[key] = type(first)(key[1], eps=first.eps, momentum=first.momentum,
                                                    affine=first.affine, track_running_stats=first.track_running_stats)
    template.train(first.training)
    state = {}
    if first.affine:
        state["weight"] = torch.cat([bn.weight for bn in bns])
        state["bias"] = torch.cat([bn.bias for bn in bns])
    if first.track_running_stats:
        state["running_mean"] = torch.cat([bn.running_mean for bn in bns])
        state["running_var"] = torch.cat([bn.running_var for bn in bns])
        state["num_batches_tracked"] = first.num_batches_tracked.clone()
    y = functional_call(template, state, (x,))
    if first.training and first.track_running_stats:
        with torch.no_grad():
            c = first.num_features
            for i, bn in enumerate(bns):
                bn.running_mean.copy_(state["running_mean"][i * c:(i + 1) * c])
                bn.running_var.copy_(state["running_var"][i * c:(i + 1) * c])
                bn.num_batches_tracked.add_(1)
    return y
