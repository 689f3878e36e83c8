"""The shared evaluation path (DESIGN.md §8): encoders -> store check -> optional BN
recalibration -> frozen features -> health check, plus the reports every evaluation writes.

Linear evaluation, KNN retrieval and fine-tuning all start here:

1. :func:`load_encoders` (strict, from a pretrain / distill / finetune checkpoint) or
   :func:`random_encoders` (the random-initialisation baseline), each an ST-GCN per
   modality built with the widths and graph the checkpoint recorded;
2. :func:`check_store_agrees`: the store's modality parameters and skeleton must be those
   the encoders were trained with (transfer to another store is fine when they are);
3. :func:`recalibrate_bn` (``--bn-recalibrate``, off by default as in the reference);
4. :func:`extract_features` in eval mode (BN running statistics, no dropout);
5. :func:`feature_health`: collapsed or non-finite features are reported before anyone
   reads an accuracy built on them.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ikem_data.layouts import get_layout, store_layout
from ikem_data.quoting import quote
from ikem_train.data.datasets import ModalityDataset, make_loader
from ikem_train.nets.stgcn import STGCN, stgcn_kwargs

#: Store modality parameters that change what an encoder sees, compared before evaluation.
#: ``bone_pairs`` and ``true_timeline`` are also model settings (the torch modalities).
STORE_KEYS = ("t_length", "rotation_sign", "bone_pairs", "true_timeline")
CHECKPOINT_KINDS = ("pretrain", "distill", "finetune")


class EvaluationError(ValueError):
    """Evaluation cannot run as asked (checkpoint, store, options); the message says why."""


def checkpoint_modalities(ck: dict, requested=None) -> tuple[str, ...]:
    """The modalities to evaluate: ``requested`` (None or ``"all"`` = all of the checkpoint's).

    Raises:
        EvaluationError: a requested modality the checkpoint has no encoder for.
    """
    from ikem_data.names import resolve_modalities

    if is_umurl(ck["config"]["model"]):
        from ikem_train.eval.umurl import umurl_features

        return umurl_features(requested)
    have = tuple(ck["modalities"])
    if requested is None or (isinstance(requested, str) and requested.strip() == "all"):
        return have
    names = resolve_modalities(requested)
    missing = [m for m in names if m not in have]
    if missing:
        raise EvaluationError(
            f"the {ck['kind']} checkpoint has no encoder for {', '.join(missing)}; it has: {', '.join(have)}")
    return names


def is_umurl(model_cfg: dict) -> bool:
    """Whether a ``model`` config section (dict) is UmURL's (``method: umurl``)."""
    return model_cfg.get("method", "ikem") == "umurl"


def input_modalities(encoders: nn.ModuleDict) -> tuple[str, ...]:
    """The store arrays the encoders read, once each, in order: an encoder's own modality,
    or its ``input_modality`` (UmURL's features all read ``joint``)."""
    return tuple(dict.fromkeys(getattr(enc, "input_modality", m) for m, enc in encoders.items()))


def _inputs_of(encoders: nn.ModuleDict, dataset) -> list[int]:
    """For each encoder, the position of its input in the dataset's modalities (x[:, k])."""
    return [list(dataset.modalities).index(getattr(enc, "input_modality", m)) for m, enc in encoders.items()]


def _stgcn(model_cfg):
    return STGCN(**stgcn_kwargs(model_cfg))


def load_encoders(ck: dict, modalities) -> nn.ModuleDict:
    """One frozen, eval-mode STGCN per modality, loaded strictly from checkpoint ``ck``.

    The encoders take the widths and the graph partition recorded in ``ck["config"]["model"]``
    (the graph is not in the state dict; ``load_checkpoint`` fills ``full`` for old files).

    Raises:
        EvaluationError: missing or unexpected encoder keys (listed), a shape mismatch,
            or a modality the checkpoint lacks.
    """
    from ikem_train.methods.model import encoder_state_dicts

    if is_umurl(ck["config"]["model"]):
        from ikem_train.eval.umurl import umurl_encoders

        return umurl_encoders({**ck["config"]["model"], "umurl": ck["config"]["umurl"]}, modalities, ck["model"])
    try:
        states = encoder_state_dicts(ck["model"], list(modalities))
    except KeyError as exc:
        raise EvaluationError(str(exc.args[0] if exc.args else exc)) from None
    encoders = nn.ModuleDict()
    for name in modalities:
        encoder = _stgcn(ck["config"]["model"])
        want, got = set(encoder.state_dict()), set(states[name])
        missing, unexpected = sorted(want - got), sorted(got - want)
        if missing or unexpected:
            raise EvaluationError(
                f"checkpoint encoder {name!r} does not match the ST-GCN: "
                f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
        try:
            encoder.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:  # shape mismatch
            raise EvaluationError(f"checkpoint encoder {name!r}: {exc}".replace("\n", " ")) from None
        encoders[name] = encoder.requires_grad_(False).eval()
    return encoders


def random_encoders(model_cfg: dict, modalities, seed: int) -> nn.ModuleDict:
    """Freshly initialised encoders (reference init, METHOD.md §5): the no-pretraining baseline.

    Args:
        model_cfg: the ``model`` config section as a dict (widths, graph partition, layout).
        modalities: names; seed: torch seed of the initialisation.

    Returns:
        ``nn.ModuleDict`` modality -> STGCN, frozen and in eval mode, in the order of ``modalities``.
    """
    torch.manual_seed(seed)
    if is_umurl(model_cfg):
        from ikem_train.eval.umurl import umurl_encoders

        return umurl_encoders(model_cfg, modalities)
    return nn.ModuleDict({m: _stgcn(model_cfg).requires_grad_(False).eval() for m in modalities})


def check_store_agrees(store_path, model_cfg: dict, trained_on: dict | None) -> dict:
    """Refuse a store whose skeleton or modality parameters differ from the encoders'.

    Args:
        store_path: the store to evaluate or fine-tune on.
        model_cfg: the encoders' ``model`` config (``bone_pairs``, ``true_timeline``).
        trained_on: the pretraining store's ``attrs["modalities"]["params"]`` as the
            checkpoint recorded them (``store_params``), or None when not recorded
            (checkpoints from before this check, random encoders).

    Returns:
        the evaluated store's modality parameters (for results.json).

    Raises:
        EvaluationError: the skeleton layout or its joint count differs from the
            encoders', or any of :data:`STORE_KEYS` differs; the message lists both
            values of each. UmURL (``model_cfg`` with ``method: umurl`` and its ``umurl``
            section) compares ``t_length`` (``umurl.t_length``), ``rotation_sign`` and the
            body slots only: it computes bone and motion from the joints.
    """
    from ikem_data.store import open_store

    layout = get_layout(model_cfg.get("layout"))
    with open_store(store_path, "r") as store:
        params = dict((store.stage("modalities") or {}).get("params") or {})
        joints = store["modalities/joint"].shape[3] if "modalities/joint" in store else layout.num_joints
        persons = store["modalities/joint"].shape[4] if "modalities/joint" in store else None
        try:
            stored = store_layout(store).name
        except ValueError:
            stored = store.attrs.get("layout")
    diffs = []
    if stored != layout.name:
        diffs.append(f"skeleton layout: store {stored!r}, checkpoint {layout.name!r}")
    if joints != layout.num_joints:
        diffs.append(f"joints: store {joints}, encoders {layout.num_joints} (layout {layout.name})")
    # UmURL computes bone and motion from the joints itself: only what shapes the joints counts
    keys = ("t_length", "rotation_sign") if is_umurl(model_cfg) else STORE_KEYS
    expected = {key: model_cfg[key] for key in ("bone_pairs", "true_timeline") if key in model_cfg and key in keys}
    if is_umurl(model_cfg):
        expected["t_length"] = model_cfg["umurl"]["t_length"]
        if persons is not None and persons != model_cfg["umurl"]["persons"]:
            diffs.append(f"body slots: store {persons}, checkpoint {model_cfg['umurl']['persons']}")
    for key, value in (trained_on or {}).items():
        if key in keys:
            expected.setdefault(key, value)
    for key in STORE_KEYS:
        if key in expected and key in params and params[key] != expected[key]:
            diffs.append(f"{key}: store {quote(params[key])}, checkpoint {quote(expected[key])}")
    if diffs:
        raise EvaluationError(
            f"store {store_path} does not match the encoders: {'; '.join(diffs)}. Evaluate on a store built "
            "with the checkpoint's settings (`ikem-data modalities --from RAW --out NEW` with the matching "
            "--bone-pairs/--t-length/--rotation-sign/--true-timeline)")
    return {key: params[key] for key in STORE_KEYS if key in params}


class _AllStreams(nn.Module):
    """Every encoder as one module over ``x`` (B, K, 3, T, V, M), for ``update_bn``.

    ``train()`` leaves dropout off: BN statistics are gathered on the activations that
    inference will see (dropout's rescaling would shift the variances).
    """

    def __init__(self, encoders: nn.ModuleDict, inputs):
        super().__init__()
        self.encoders, self.inputs = encoders, list(inputs)

    def forward(self, x):
        return [encoder(x[:, k]) for k, encoder in zip(self.inputs, self.encoders.values())]

    def train(self, mode=True):
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.eval()
        return self


@torch.no_grad()
def recalibrate_bn(encoders: nn.ModuleDict, dataset: ModalityDataset, batch_size, device, num_workers=0):
    """Recompute every BatchNorm running mean/variance over ``dataset`` (the train split).

    Uses ``torch.optim.swa_utils.update_bn`` (statistics reset, then the cumulative average
    of one pass's batch statistics), dropout off. The encoders stay frozen and in eval mode.

    Args:
        encoders: modality -> STGCN (or UmURL feature), each reading its modality (or
            ``input_modality``) of the dataset.
        dataset: its ``x`` (B, K, 3, T, V, M). batch_size, num_workers: of the loader.
    """
    from torch.optim.swa_utils import update_bn

    update_bn((x for x, _, _ in eval_batches(dataset, batch_size, device, num_workers)), _AllStreams(encoders, _inputs_of(encoders, dataset)),
              device=device)
    encoders.eval()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def eval_batches(dataset: ModalityDataset, batch_size, device, num_workers=0):
    """Every batch of ``dataset`` in order (no shuffle; the last batch may be partial).

    Yields:
        ``(x, labels, store indices)``: x (B, K, 3, T, V, M) float32 on ``device``, K = the
        dataset's modalities in its order; labels and indices (B,) int64 on the CPU.
    """
    # Evaluation batches carry no augmentation, so the worker count changes nothing but speed:
    # never more workers than cores (torch warns, and they only contend).
    num_workers = min(num_workers, usable_cores())
    loader, _ = make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    for batch in loader:
        yield batch["x"].to(device), batch["label"], batch["index"]


@torch.no_grad()
def extract_features(encoders: nn.ModuleDict, dataset: ModalityDataset, batch_size, device, num_workers=0):
    """Features of every sample of ``dataset``.

    Returns:
        ``(features (n, K, hidden_dim) float32, labels (n,) int64, store indices (n,) int64)``,
        K = the encoders in their order; each reads its modality (or ``input_modality``,
        :func:`input_modalities`) of the dataset.
    """
    feats, labels, index = [], [], []
    names, inputs = list(encoders), _inputs_of(encoders, dataset)
    for x, label, idx in eval_batches(dataset, batch_size, device, num_workers):  # x (B, K', 3, T, V, M)
        feats.append(torch.stack([encoders[m](x[:, k]) for k, m in zip(inputs, names)], dim=1).float().cpu())
        labels.append(label)
        index.append(idx)
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def feature_stats(features: torch.Tensor) -> dict:
    """How much (n, D) features vary across samples.

    Returns:
        ``std``: ``mean_d std_n(f[n, d])``, in feature units; ``scale``: ``mean |f|``;
        ``relative``: ``std / scale`` (0 when all features are zero).

    Healthy ST-GCN features (after BN and ReLU) have ``std`` and ``relative`` of order
    0.1 to 1. An untrained encoder in eval mode gives ``scale`` ~1e-7: its features
    vanish, so a linear classifier at the paper's learning rate cannot move; an encoder
    that maps every sample to the same direction gives ``relative`` near 0, which also
    defeats cosine KNN.
    """
    f = features.double()
    std, scale = float(f.std(dim=0, unbiased=False).mean()), float(f.abs().mean())
    return {"std": std, "scale": scale, "relative": std / scale if scale > 0 else 0.0}


def feature_health(features: torch.Tensor, names, threshold: float) -> dict:
    """Per-modality :func:`feature_stats` of (n, K, D) features, and whether they collapsed.

    A modality is collapsed when ``std < threshold`` (the features vanish or do not vary)
    or ``relative < threshold`` (every sample points the same way).

    Returns:
        ``{modality: {"std", "scale", "relative", "collapsed"}}``.

    Raises:
        EvaluationError: non-finite features (NaN or inf), naming the modalities.
    """
    bad = [m for k, m in enumerate(names) if not bool(torch.isfinite(features[:, k]).all())]
    if bad:
        raise EvaluationError(f"non-finite frozen features from the {', '.join(bad)} encoder(s): "
                              "the checkpoint or the store holds NaN/inf")
    health = {}
    for k, m in enumerate(names):
        stats = feature_stats(features[:, k])
        health[m] = {**stats, "collapsed": min(stats["std"], stats["relative"]) < threshold}
    return health


def collapse_warning(health: dict, threshold: float, recalibrated: bool) -> str | None:
    """The warning for collapsed modalities, naming cause and remedies (None when healthy)."""
    collapsed = {m: h for m, h in health.items() if h["collapsed"]}
    if not collapsed:
        return None
    listed = ", ".join(f"{m} (std {h['std']:.2g}, std/mean|f| {h['relative']:.2g})" for m, h in collapsed.items())
    cause = ("Even after BN recalibration the encoder maps every sample to nearly the same vector "
             "(pretraining collapsed or never started)" if recalibrated else
             "Every sample maps to nearly the same (or a vanishing) vector, so accuracies built on them mean little. "
             "The usual cause is an encoder trained for few steps: eval-mode BatchNorm still holds nearly its "
             "initial running statistics")
    remedy = "pretrain longer" + ("" if recalibrated else ", or pass --bn-recalibrate to recompute BN statistics "
                                                            "on the train split")
    return (f"WARNING: collapsed frozen features (per-dimension std across samples, or that std over mean |f|, "
            f"below {threshold:g}): {listed}. {cause}. Remedy: {remedy}.")


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction in [0, 1] of rows whose label is among the ``k`` largest logits (k capped at C).

    Args:
        logits: (n, C) float. labels: (n,) int64.

    Returns:
        the fraction as a float; NaN when n = 0.
    """
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean()) if len(labels) else float("nan")


def class_report(pred, labels, train_labels, num_class: int) -> dict:
    """Per-class accuracy of val predictions and the baselines to read them against.

    Args:
        pred, labels: (n,) int predicted and true val labels.
        train_labels: (n_train,) int labels the classifier was fitted on.
        num_class: C.

    Returns:
        ``per_class`` (list of ``{"label", "n", "top1"}`` for classes present in val),
        ``balanced_top1`` (their mean), ``chance`` (1/C), ``majority_baseline`` (val
        accuracy of always answering the most frequent train class),
        ``unseen_val_classes`` (val classes with no train sample).
    """
    pred, labels, train_labels = (np.asarray(a, dtype=np.int64) for a in (pred, labels, train_labels))
    rows = []
    for c in np.unique(labels):
        mask = labels == c
        rows.append({"label": int(c), "n": int(mask.sum()), "top1": float((pred[mask] == c).mean())})
    majority = int(np.bincount(train_labels, minlength=num_class).argmax()) if len(train_labels) else 0
    return {
        "per_class": rows,
        "balanced_top1": float(np.mean([r["top1"] for r in rows])) if rows else float("nan"),
        "chance": 1.0 / num_class,
        "majority_baseline": float((labels == majority).mean()) if len(labels) else float("nan"),
        "unseen_val_classes": sorted(set(np.unique(labels).tolist()) - set(np.unique(train_labels).tolist())),
    }


def parameter_snapshot(module: nn.Module) -> dict:
    """Copies of every parameter and buffer, for :func:`changed_parameters`."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN at the same places (a NaN weight left alone is unchanged)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])


def changed_parameters(before: dict, module: nn.Module) -> list[str]:
    """Names whose values differ from the snapshot ``before``."""
    return [k for k, v in module.state_dict().items() if not _same(before[k], v.to(before[k].device))]
