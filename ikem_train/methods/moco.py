"""MoCo building blocks: queue, momentum update, InfoNCE (METHOD.md §6.1-6.3; MoCo, He et al. 2020).

The queue lives in registered buffers of the model that owns it (so it is part of the
checkpoint); these functions operate on those buffers. Logits are always computed in
float32, also under bf16 autocast.
"""

import torch
import torch.nn.functional as F


def check_queue_size(queue_size, batch_size):
    """Raise ValueError unless the queue length K is a multiple of the batch size B.

    The pointer advances by B each step, so K % B == 0 keeps every write contiguous
    (METHOD.md §11.18).
    """
    if batch_size <= 0 or queue_size % batch_size != 0:
        raise ValueError(
            f"queue_size {queue_size} is not divisible by the batch size {batch_size}; "
            f"choose a queue size that is a multiple of the batch size (and drop the last "
            f"incomplete batch)")


def random_queue(dim, queue_size):
    """A (dim, K) float32 queue of random unit columns (METHOD.md §6.1)."""
    return F.normalize(torch.randn(dim, queue_size), dim=0)


@torch.no_grad()
def momentum_update(key, query, momentum):
    """``θ_k ← m·θ_k + (1 − m)·θ_q`` for every parameter pair (buffers are untouched).

    Args:
        key, query: modules of identical structure, or two equally long sequences of
            such modules (all pairs updated in the same two fused launches).
        momentum: m in [0, 1].
    """
    keys, queries = ([key], [query]) if isinstance(key, torch.nn.Module) else (key, query)
    k_params = [p for module in keys for p in module.parameters()]
    q_params = [p.detach() for module in queries for p in module.parameters()]
    if len(k_params) != len(q_params):
        raise ValueError(f"key and query modules differ: {len(k_params)} vs {len(q_params)} parameters")
    if not k_params:
        return
    torch._foreach_mul_(k_params, momentum)  # one fused launch per op instead of one per tensor
    torch._foreach_add_(k_params, q_params, alpha=1.0 - momentum)


@torch.no_grad()
def enqueue(queue, keys, ptr):
    """Write ``keys`` (B, dim) into columns ``[ptr, ptr + B)`` of ``queue`` (dim, K).

    Args:
        ptr: the first column: a Python int (the models keep their pointer on the host, so
            a training step never waits for the device) or a (1,) long tensor (read with
            ``int()``: a host sync on a GPU).

    The pointer itself is advanced once per step, shared by every queue of the model.
    """
    b = keys.shape[0]
    start = ptr if isinstance(ptr, int) else int(ptr)
    queue[:, start:start + b] = keys.detach().to(queue.dtype).T


@torch.no_grad()
def advance_pointer(ptr, batch_size, queue_size):
    """In place ``ptr ← (ptr + B) mod K`` for a (1,) long pointer buffer (reads it: a host sync on a GPU)."""
    ptr[0] = (int(ptr[0]) + batch_size) % queue_size


def no_autocast(tensor):
    """A context in which matmuls run in the inputs' dtype even under autocast.

    Used around every similarity/logit computation so logits are float32 under bf16
    autocast (a bf16 logit of 1/0.07 ≈ 14.3 has a step of 0.0625).
    """
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def info_nce(q, k, queue, temperature):
    """InfoNCE with the own key as the positive and the queue as negatives.

    ``CE([q·k, q·Q] / T, target 0)``, mean over the batch (METHOD.md §6.3).

    Args:
        q: (B, D) L2-normalised queries (with grad).
        k: (B, D) L2-normalised keys (no grad expected).
        queue: (D, K) negatives, used detached.
        temperature: T > 0.

    Returns:
        scalar float32 loss.
    """
    with no_autocast(q):
        q = q.float()
        l_pos = (q * k.detach().float()).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = q @ queue.detach().float()  # (B, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)
