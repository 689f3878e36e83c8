"""CrosSCLR's multi-positive InfoNCE with mined positives (METHOD.md §6.4a; CrosSCLR Eq. 7-9).

One function serves both the cross-modal pretraining loss (anchor modality x, positives
mined by modality y) and the distillation loss (METHOD.md §7): both read
``logits = [pos, sim, sim ⊙ mine] / T`` with the positive set
``[own key, top-k of mine (raw block), top-k of mine (context block)]``.
"""

import torch

from ikem_train.methods.moco import no_autocast


def multi_positive_nce(pos, sim, mine, temperature, topk=1, context=True):
    """Per-sample multi-positive InfoNCE.

    ``L = −(1/|P|) Σ_{p∈P} log softmax(logits)_p`` with
    ``logits = [pos, sim, sim ⊙ mine] / T`` (context) or ``[pos, sim] / T`` (no context)
    and ``P = {0} ∪ topk(mine)`` in each queue block, ``|P| = 1 + topk·(1 + context)``.

    Args:
        pos: (B, 1) similarity of the anchor to its own positive key.
        sim: (B, K) similarity of the anchor to the queue (carries the gradient).
        mine: (B, K) similarity used to mine positives (the other view/modality); the
            top-k indices are taken without gradient, the context product keeps it.
        temperature: T > 0.
        topk: positives mined per sample.
        context: add the context block ``sim ⊙ mine``.

    Returns:
        (B,) float32 loss per sample.
    """
    with no_autocast(sim):
        return _multi_positive_nce(pos.float(), sim.float(), mine.float(), temperature, topk, context)


def _multi_positive_nce(pos, sim, mine, temperature, topk, context):
    b, k = sim.shape
    idx = torch.topk(mine.detach(), topk, dim=1).indices  # (B, topk)
    mask = torch.zeros(b, k, dtype=torch.bool, device=sim.device).scatter_(1, idx, True)
    blocks, masks = [pos, sim], [torch.ones(b, 1, dtype=torch.bool, device=sim.device), mask]
    if context:
        blocks.append(sim * mine)
        masks.append(mask)
    log_prob = torch.log_softmax(torch.cat(blocks, dim=1) / temperature, dim=1)
    pmask = torch.cat(masks, dim=1)
    return -(log_prob * pmask).sum(dim=1) / pmask.sum(dim=1)


def cross_modal_losses(q, k, queues, temperature, topk=1, context=True):
    """CrosSCLR cross-modal loss of every modality (METHOD.md §6.4a).

    For each ordered pair (x, y), x ≠ y: ``L_{x|y}`` is :func:`multi_positive_nce` with
    ``pos = q_x·k_x``, ``sim = q_x·Q_x`` and ``mine = q_y·Q_y``; then
    ``L_x = mean_batch( mean_{y≠x} L_{x|y} )``.

    Args:
        q: dict modality -> (B, D) normalised queries (with grad).
        k: dict modality -> (B, D) normalised keys (no grad).
        queues: dict modality -> (D, K) queue (used detached).
        temperature, topk, context: as in :func:`multi_positive_nce`.

    Returns:
        dict modality -> scalar loss. Needs at least two modalities.
    """
    names = list(q)
    if len(names) < 2:
        raise ValueError("the cross-modal loss needs at least two modalities")
    with no_autocast(q[names[0]]):
        qf = {x: q[x].float() for x in names}
        pos = {x: (qf[x] * k[x].detach().float()).sum(dim=1, keepdim=True) for x in names}
        sim = {x: qf[x] @ queues[x].detach().float() for x in names}  # (B, K) each, computed once
    losses = {}
    for x in names:
        per_pair = [multi_positive_nce(pos[x], sim[x], sim[y], temperature, topk, context)
                    for y in names if y != x]
        losses[x] = torch.stack(per_pair).mean(dim=0).mean()
    return losses
