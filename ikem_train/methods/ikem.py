"""IKEM's implicit knowledge exchange term (METHOD.md §6.4b; Wei et al. 2023).

Each modality's pooled query feature goes through its own head (256 -> 768 -> 768 for
six modalities) and is contrasted with the normalised concatenation of all modalities'
keys; the concatenated queues are the negatives.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ikem_train.methods.moco import info_nce


class IKEMHead(nn.Module):
    """``Linear(in_dim, dim) → ReLU → Linear(dim, dim)`` (METHOD.md §5: mlp2_x).

    Args:
        in_dim: the pooled feature width (256).
        dim: feature_dim × number of modalities (768 for six).
    """

    def __init__(self, in_dim=256, dim=768):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, h):
        return self.net(h)


def concat_keys(keys):
    """``normalize(concat(k_1, …, k_n))`` over dim 1: (B, n·D) from n (B, D) keys."""
    return F.normalize(torch.cat([k.float() for k in keys], dim=1), dim=1)


def concat_queues(queues):
    """Column-normalised vertical concatenation: (n·D, K) from n (D, K) queues."""
    return F.normalize(torch.cat([Q.detach().float() for Q in queues], dim=0), dim=0)


def ikem_loss(u, joint_key, joint_queue, temperature):
    """``CE([û·κ, û·Q̄] / T, target 0)`` with ``û = normalize(u)`` (METHOD.md §6.4b).

    Args:
        u: (B, n·D) IKEM head output of one modality (un-normalised, with grad).
        joint_key: (B, n·D) :func:`concat_keys` of all modalities' keys.
        joint_queue: (n·D, K) :func:`concat_queues` of all modalities' queues.
        temperature: T.

    Returns:
        scalar float32 loss.
    """
    return info_nce(F.normalize(u.float(), dim=1), joint_key, joint_queue, temperature)
