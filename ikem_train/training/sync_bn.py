"""Synchronized BatchNorm for multi-process training: statistics over the global batch.

:func:`convert_sync_batchnorm` swaps every BatchNorm of a model for torch's SyncBatchNorm on
CUDA and for :class:`CPUSyncBatchNorm` on CPU (torch's refuses CPU tensors; gloo runs, and
so CI, need one), so a batch split over processes normalises as one process would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ikem_train.training.distributed import world_size



def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` (in place) by a synchronized one.

    CUDA: ``torch.nn.SyncBatchNorm``; CPU: :class:`CPUSyncBatchNorm` (torch's raises
    "expected input tensor to be on GPU"). Parameters and buffers are the same objects,
    so an optimizer built before still holds them, and state-dict keys do not change.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CPUSyncBatchNorm):
            module.add_module(name, CPUSyncBatchNorm.like(child))
        else:
            convert_sync_batchnorm(child, device)
    return module


class _SyncBatchNormFunction(torch.autograd.Function):
    """BatchNorm over the union of every rank's batch (float64 sums, one all-reduce each way)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() // c, dtype=torch.float64, device=x.device)
        stats = torch.cat([x.sum(dims, dtype=torch.float64), (x * x).sum(dims, dtype=torch.float64), count])
        dist.all_reduce(stats)  # per channel: Σx, Σx² and the sample count over all ranks
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean.to(x.dtype).view(shape)) * invstd.to(x.dtype).view(shape)
        ctx.save_for_backward(xhat, weight, invstd.to(x.dtype), n)
        ctx.dims, ctx.shape = dims, shape
        unbiased = var * n / (n - 1).clamp_min(1)  # running_var takes the unbiased estimate, as BatchNorm's
        ctx.mark_non_differentiable(mean, unbiased)
        return xhat * weight.view(shape) + bias.view(shape), mean, unbiased

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        xhat, weight, invstd, n = ctx.saved_tensors
        dims, shape, c = ctx.dims, ctx.shape, xhat.shape[1]
        sum_dy = dy.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (dy * xhat).sum(dims, dtype=torch.float64)
        sums = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(sums)  # Σdy and Σdy·x̂ over all ranks: the batch statistics couple every sample
        mean_dy = (sums[:c] / n).to(dy.dtype).view(shape)
        mean_dy_xhat = (sums[c:2 * c] / n).to(dy.dtype).view(shape)
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * (invstd * weight).view(shape)
        # This rank's share of the parameter gradients; DDP averages them over the ranks.
        return dx, sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover every rank's batch, for CPU/gloo runs.

    Forward all-reduces the per-channel sums and sums of squares (float64), backward the
    two gradient sums Σdy and Σdy·x̂, so each rank gets exactly the gradients of BatchNorm
    over the concatenated global batch. Running statistics are updated as BatchNorm's
    (unbiased variance, ``momentum``). In eval mode, or in one process, it is BatchNorm.
    Input (N, C, ...) of any rank >= 2; affine only.
    """

    @classmethod
    def like(cls, bn: nn.modules.batchnorm._BatchNorm) -> "CPUSyncBatchNorm":
        """A synchronized copy of ``bn`` sharing its parameters and buffers."""
        if not bn.affine:
            raise ValueError("CPUSyncBatchNorm supports affine BatchNorm only")
        out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        out.weight, out.bias = bn.weight, bn.bias
        if bn.track_running_stats:
            out.running_mean, out.running_var = bn.running_mean, bn.running_var
            out.num_batches_tracked = bn.num_batches_tracked
        out.train(bn.training)
        return out

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions (N, C, ...), got {x.dim()}")

    def forward(self, x):
        if not (self.training and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        y, mean, var = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(var.to(self.running_var.dtype), factor)
        return y
