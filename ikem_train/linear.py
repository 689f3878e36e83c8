"""Linear evaluation of frozen encoders (METHOD.md §8), with fused logits and saved scores.

One ST-GCN per modality is loaded *strictly* from a pretrain or distill checkpoint
(``encoder_state_dicts``: anything missing or unexpected is an error listing the keys),
frozen and kept in eval mode (BN running statistics, no dropout). Because the encoders
are frozen, in eval mode and linear evaluation has no augmentation, each sample's 256-d
features are computed once; the classifiers then train on those features, which is the
same computation as running the encoders every epoch, only faster.

Several modalities: the per-modality logits are averaged before the softmax and one CE
loss trains all classifiers (the reference's ``all``). Results: the final epoch's top-1
and top-5 on the val split, plus the best evaluated epoch, which is *selected on the
validation split* and labelled so. Per-sample val logits go to ``scores.npz`` for
:mod:`ikem_train.fuse`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ikem_train.checkpoint import load_checkpoint, save_checkpoint
from ikem_train.config import Config, config_to_dict
from ikem_train.data import ModalityDataset, make_loader
from ikem_train.loop import append_jsonl, lr_at, resolve_device

STGCN_KEYS = ("in_channels", "hidden_channels", "hidden_dim", "dropout", "graph_partition")
BEST_LABEL = "best epoch selected on the validation split (optimistic; report the final epoch)"


class LinearEvalError(ValueError):
    """The checkpoint does not fit linear evaluation; the message lists what differs."""


def checkpoint_modalities(ck: dict, requested=None) -> tuple[str, ...]:
    """The modalities to evaluate: ``requested`` (None or ``"all"`` = all of the checkpoint's).

    Raises:
        LinearEvalError: a requested modality the checkpoint has no encoder for.
    """
    from ikem_data.names import resolve_modalities

    have = tuple(ck["modalities"])
    if requested is None or (isinstance(requested, str) and requested.strip() == "all"):
        return have
    names = resolve_modalities(requested)
    missing = [m for m in names if m not in have]
    if missing:
        raise LinearEvalError(
            f"the {ck['kind']} checkpoint has no encoder for {', '.join(missing)}; it has: {', '.join(have)}"
        )
    return names


def load_encoders(ck: dict, modalities) -> nn.ModuleDict:
    """Build one frozen STGCN per modality, loaded strictly from checkpoint ``ck``.

    The encoders take the widths and the graph partition recorded in ``ck["config"]["model"]``
    (the graph is not in the state dict; :func:`load_checkpoint` fills ``full`` for old files).

    Raises:
        LinearEvalError: missing or unexpected encoder keys (listed), or a modality the
            checkpoint lacks.
    """
    from ikem_train.model import encoder_state_dicts
    from ikem_train.stgcn import STGCN

    model_cfg = ck["config"]["model"]
    kwargs = {k: model_cfg[k] for k in STGCN_KEYS if k in model_cfg}
    try:
        states = encoder_state_dicts(ck["model"], list(modalities))
    except KeyError as exc:
        raise LinearEvalError(str(exc.args[0] if exc.args else exc)) from None
    encoders = nn.ModuleDict()
    for name in modalities:
        encoder = STGCN(**kwargs)
        want, got = set(encoder.state_dict()), set(states[name])
        missing, unexpected = sorted(want - got), sorted(got - want)
        if missing or unexpected:
            raise LinearEvalError(
                f"checkpoint encoder {name!r} does not match the ST-GCN: "
                f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}"
            )
        try:
            encoder.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:  # shape mismatch
            raise LinearEvalError(f"checkpoint encoder {name!r}: {exc}".replace("\n", " ")) from None
        encoder.requires_grad_(False)
        encoder.eval()
        encoders[name] = encoder
    return encoders


@torch.no_grad()
def extract_features(encoders: nn.ModuleDict, dataset: ModalityDataset, batch_size, device, num_workers=0):
    """Features of every sample of ``dataset``: (n, K, hidden_dim) float32, labels, store indices."""
    loader, _ = make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    feats, labels, index = [], [], []
    names = list(encoders)
    for batch in loader:
        x = batch["x"].to(device)  # (B, K, 3, T, 25, M)
        feats.append(torch.stack([encoders[m](x[:, k]) for k, m in enumerate(names)], dim=1).float().cpu())
        labels.append(batch["label"])
        index.append(batch["index"])
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (k capped at #classes)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean()) if len(labels) else float("nan")


def _encoder_snapshot(encoders):
    return {f"{m}.{k}": v.detach().clone() for m, enc in encoders.items() for k, v in enc.state_dict().items()}


def linear_evaluate(checkpoint, store_path, benchmark, cfg: Config, run_dir, *, modalities=None, log=print) -> dict:
    """Train linear classifiers on frozen encoders and evaluate on the val split.

    Args:
        checkpoint: path of a ``pretrain`` or ``distill`` checkpoint.
        store_path: store with ``modalities/<name>`` for each evaluated modality.
        benchmark: split to use (train for fitting, val for reporting).
        cfg: run config (``linear``, ``data.eval_batch_size``, ``data.num_workers``, ``run``).
        run_dir: folder for ``results.json``, ``scores.npz``, ``metrics.jsonl``, ``classifier.pt``.
        modalities: names, comma string, ``"all"`` or None (None/"all": the checkpoint's).

    Returns:
        the results dict written to ``results.json``.

    Raises:
        CheckpointError, LinearEvalError, StoreError, KeyError (unknown benchmark).
    """
    run_dir = Path(run_dir)
    ck = load_checkpoint(checkpoint, kind=("pretrain", "distill"))
    names = checkpoint_modalities(ck, modalities)
    device = resolve_device(cfg.run.device)
    encoders = load_encoders(ck, names).to(device)
    before = _encoder_snapshot(encoders)

    lc = cfg.linear
    train_ds = ModalityDataset(store_path, benchmark, "train", names)
    val_ds = ModalityDataset(store_path, benchmark, "val", names)
    t0 = time.perf_counter()
    x_train, y_train, _ = extract_features(encoders, train_ds, cfg.data.eval_batch_size, device, cfg.data.num_workers)
    x_val, y_val, i_val = extract_features(encoders, val_ds, cfg.data.eval_batch_size, device, cfg.data.num_workers)
    log(f"features of {len(x_train)} train and {len(x_val)} val samples in {time.perf_counter() - t0:.1f} s")
    num_class = lc.num_class or int(max(int(y_train.max()), int(y_val.max()) if len(y_val) else 0)) + 1
    if int(y_train.max()) >= num_class:
        raise LinearEvalError(f"linear.num_class={num_class} but the labels go up to {int(y_train.max())}")

    torch.manual_seed(cfg.data.seed)
    hidden = x_train.shape[-1]
    heads = nn.ModuleList(nn.Linear(hidden, num_class) for _ in names)
    for head in heads:  # reference init: N(0, 0.02), bias 0 (METHOD.md §8)
        nn.init.normal_(head.weight, 0.0, 0.02)
        nn.init.zeros_(head.bias)
    heads.to(device)
    opt = torch.optim.SGD(heads.parameters(), lr=lc.lr, momentum=lc.momentum,
                          weight_decay=lc.weight_decay, nesterov=lc.nesterov)
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_val_d = x_val.to(device)
    gen = torch.Generator().manual_seed(cfg.data.seed)

    def logits_of(x):  # x (B, K, hidden) -> per-modality (K, B, C)
        return torch.stack([head(x[:, k]) for k, head in enumerate(heads)])

    best, final = None, None
    for epoch in range(1, lc.epochs + 1):
        lr = lr_at(epoch, lc.lr, lc.milestones, lc.gamma)
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(x_train), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(order), lc.batch_size):
            idx = order[start : start + lc.batch_size]
            loss = nn.functional.cross_entropy(logits_of(x_train[idx]).mean(0), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if epoch % lc.eval_interval == 0 or epoch == lc.epochs:
            with torch.no_grad():
                per = logits_of(x_val_d).cpu()
            fused = per.mean(0)
            rec = {"epoch": epoch, "lr": lr, "train_loss": total / len(order),
                   "top1": topk_accuracy(fused, y_val, 1), "top5": topk_accuracy(fused, y_val, 5),
                   **{f"top1/{m}": topk_accuracy(per[k], y_val, 1) for k, m in enumerate(names)}}
            append_jsonl(run_dir / "metrics.jsonl", rec)
            log(f"linear epoch {epoch}/{lc.epochs}: loss {rec['train_loss']:.4f}, "
                f"val top-1 {100 * rec['top1']:.2f} %, top-5 {100 * rec['top5']:.2f} %")
            if best is None or rec["top1"] > best["top1"]:
                best = rec
            final = rec

    after = _encoder_snapshot(encoders)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if changed:
        raise LinearEvalError(f"frozen encoder weights changed during linear evaluation: {changed[:5]}")

    all_names = store_names(store_path)
    val_names = np.array([all_names[int(i)] for i in i_val])
    scores = {"fused": fused.numpy(), "label": y_val.numpy(), "index": i_val.numpy(), "name": val_names,
              "modalities": np.array(names), **{f"logits/{m}": per[k].numpy() for k, m in enumerate(names)}}
    tmp = run_dir / "scores.tmp.npz"
    np.savez(tmp, **scores)
    tmp.replace(run_dir / "scores.npz")
    save_checkpoint(run_dir / "classifier.pt", {
        "model": heads.state_dict(), "kind": "linear", "epoch": lc.epochs, "modalities": list(names),
        "config": config_to_dict(cfg), "checkpoint": str(checkpoint)})
    results = {
        "checkpoint": str(checkpoint), "checkpoint_kind": ck["kind"], "benchmark": benchmark,
        "modalities": list(names), "fused": len(names) > 1, "num_class": num_class,
        "graph_partition": ck["config"]["model"]["graph_partition"],
        "train_samples": len(y_train), "val_samples": len(y_val),
        "final": {k: v for k, v in final.items() if k != "lr"},
        "best_on_val": {"note": BEST_LABEL, **{k: v for k, v in best.items() if k != "lr"}},
        "encoder_unchanged": True,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def store_names(store_path) -> list[str]:
    """Decoded ``raw/name`` of every sample of a store."""
    from ikem_data.store import open_store

    with open_store(store_path, "r") as store:
        return store.names()
