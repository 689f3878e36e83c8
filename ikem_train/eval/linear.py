"""Linear classifiers on frozen features (METHOD.md §8), one per modality, logits fused.

The encoders are frozen, in eval mode, and linear evaluation has no augmentation, so each
sample's features are computed once (:mod:`ikem_train.eval.features`) and the classifiers
train on those: the same computation as running the encoders every epoch, only faster.

Several modalities: the per-modality logits are averaged before the softmax and one CE
loss trains all classifiers (the reference's ``all``). Reported: the final epoch's top-1
and top-5 on the val split, plus the best evaluated epoch, which is *selected on the
validation split* and labelled so.
"""

from __future__ import annotations

import torch
from torch import nn

from ikem_train.config import LinearConfig
from ikem_train.eval.features import EvaluationError, topk_accuracy
from ikem_train.training.loop import append_jsonl, lr_at

BEST_LABEL = "best epoch selected on the validation split (optimistic; report the final epoch)"


def fit_linear(x_train, y_train, x_val, y_val, names, lc: LinearConfig, num_class: int, *, seed: int, device,
               metrics_path=None, log=print) -> dict:
    """Train one linear classifier per modality on averaged logits; evaluate on val.

    Args:
        x_train, x_val: (n, K, D) float32 frozen features, K = len(names).
        y_train, y_val: (n,) int64 labels in [0, num_class).
        names: the K modality names. lc: the ``linear`` config (SGD, step schedule).
        seed: seeds the classifier init (N(0, 0.02), bias 0) and the batch order.
        metrics_path: ``metrics.jsonl`` to append each evaluated epoch to (None: none).

    Returns:
        ``{"heads": nn.ModuleList, "logits": (K, n_val, C) final per-modality val logits,
        "final": record, "best": record}``; a record has ``epoch, lr, train_loss, top1,
        top5`` (fused) and ``head_top1/<modality>`` (one head of the fused classifier
        alone: trained on the averaged logits, it is not a classifier of that modality;
        ``per_modality_top1`` in results.json is).

    Raises:
        EvaluationError: the classifiers diverge (non-finite val logits).
    """
    torch.manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(x_train.shape[-1], num_class) for _ in names)
    for head in heads:  # reference init: N(0, 0.02), bias 0 (METHOD.md §8)
        nn.init.normal_(head.weight, 0.0, 0.02)
        nn.init.zeros_(head.bias)
    heads.to(device)
    opt = torch.optim.SGD(heads.parameters(), lr=lc.lr, momentum=lc.momentum,
                          weight_decay=lc.weight_decay, nesterov=lc.nesterov)
    x_train, y_train, x_val_d = x_train.to(device), y_train.to(device), x_val.to(device)
    gen = torch.Generator().manual_seed(seed)

    def logits_of(x):  # x (B, K, D) -> per-modality (K, B, C)
        return torch.stack([head(x[:, k]) for k, head in enumerate(heads)])

    best = final = per = None
    for epoch in range(1, lc.epochs + 1):
        lr = lr_at(epoch, lc.lr, lc.milestones, lc.gamma)
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(x_train), generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, len(order), lc.batch_size):
            idx = order[start : start + lc.batch_size]
            loss = nn.functional.cross_entropy(logits_of(x_train[idx]).mean(0), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        if epoch % lc.eval_interval == 0 or epoch == lc.epochs:
            with torch.no_grad():
                per = logits_of(x_val_d).cpu()
            if not bool(torch.isfinite(per).all()):
                raise EvaluationError(f"the linear classifiers diverged by epoch {epoch} (non-finite val logits); "
                                      f"lower linear.lr (now {lc.lr:g})")
            fused = per.mean(0)
            final = {"epoch": epoch, "lr": lr, "train_loss": float(total) / len(order),
                     "top1": topk_accuracy(fused, y_val, 1), "top5": topk_accuracy(fused, y_val, 5),
                     **{f"head_top1/{m}": topk_accuracy(per[k], y_val, 1) for k, m in enumerate(names)}}
            if metrics_path is not None:
                append_jsonl(metrics_path, final)
            log(f"linear epoch {epoch}/{lc.epochs}: loss {final['train_loss']:.4f}, "
                f"val top-1 {100 * final['top1']:.2f} %, top-5 {100 * final['top5']:.2f} %")
            if best is None or final["top1"] > best["top1"]:
                best = final
    return {"heads": heads, "logits": per, "final": final, "best": best}
