"""Relational cross-modality distillation loss, teacher 6 -> student (METHOD.md §7).

For student s and teacher modality x:
``logits = [z_s·t, z_s·Q_T, (q_x·Q_x) ⊙ (z_s·Q_T)] / T`` with positives the own teacher
embedding and the teacher-queue entry that teacher modality x ranks nearest (in both
blocks). It is CrosSCLR's multi-positive InfoNCE in the teacher's concatenated space,
not a KL divergence.
"""

import torch

from ikem_train.methods.crossclr import multi_positive_nce
from ikem_train.methods.moco import no_autocast


def distill_loss(z, t, teacher_queue, sigmas, temperature, topk=1, context=True):
    """The loss of one student against every teacher modality.

    Args:
        z: (B, Dt) normalised student embedding (with grad).
        t: (B, Dt) normalised concatenated teacher embedding (no grad).
        teacher_queue: (Dt, K) teacher queue (used detached).
        sigmas: list of (B, K) teacher similarities ``q_x·Q_x``, one per teacher
            modality (no grad); they choose the mined positives and weight the context block.
        temperature, topk, context: as in :func:`ikem_train.methods.crossclr.multi_positive_nce`.

    Returns:
        scalar ``mean_batch( mean_x L_{x,s} )``.
    """
    with no_autocast(z):
        z = z.float()
        pos = (z * t.detach().float()).sum(dim=1, keepdim=True)  # (B, 1)
        rho = z @ teacher_queue.detach().float()  # (B, K)
    per_teacher = [multi_positive_nce(pos, rho, s.detach(), temperature, topk, context) for s in sigmas]
    return torch.stack(per_teacher).mean(dim=0).mean()
