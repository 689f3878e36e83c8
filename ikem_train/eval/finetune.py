"""Fine-tuning and semi-supervised evaluation: encoders and new classifiers trained end to end.

:class:`FinetuneModel` is one ST-GCN plus a linear classifier per modality, the logits
averaged as in linear evaluation. It computes its modalities from the (augmented) joint
sequence on the device, like pretraining, so the ``data.shear`` / ``data.crop_ratio``
augmentations apply; with both negative its inputs equal the store's cached modalities.
It follows the training loop's contract (:mod:`ikem_train.training.loop`), so fine-tuning has the
same checkpoints, metrics and exact resume as pretraining.

Semi-supervised evaluation fine-tunes on a labelled subset drawn by :func:`label_subset`:
**per class**, round(fraction · n_c) samples of each class c (the 1 % / 10 % protocol of
AimCLR and CMD), so every class keeps at least one labelled sample or the fraction is refused.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ikem_train.data.device_modalities import compute_modalities


def label_subset(labels, fraction: float, seed: int) -> np.ndarray:
    """Positions of a seeded, per-class labelled subset of a train split.

    Args:
        labels: (n,) int train labels. fraction: in (0, 1]. seed: the draw's seed.

    Returns:
        sorted (m,) int64 positions into ``labels``, m = sum over classes of
        ``floor(fraction · n_c + 0.5)``; the same for the same seed.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or so small that a class gets no sample
            (the message gives the smallest fraction that keeps one of each).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    sizes = np.floor(fraction * counts + 0.5).astype(np.int64)
    if (sizes == 0).any():
        c = int(np.argmin(counts))
        raise ValueError(f"label fraction {fraction} leaves class {int(classes[c])} ({int(counts[c])} train samples) "
                         f"without a labelled sample; use at least {0.5 / counts.min():.3g}")
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(size), replace=False)
              for c, size in zip(classes, sizes)]
    return np.sort(np.concatenate(picked))


class FinetuneModel(nn.Module):
    """One ST-GCN + ``Linear(hidden_dim, num_class)`` per modality; logits averaged.

    Args:
        streams: ``nn.ModuleDict`` modality -> :class:`ikem_train.methods.model.Encoder` built with
            ``out_dim=num_class, mlp=False`` (backbone pretrained or random).
        bone_pairs, true_timeline, layout: the modality settings (as the encoders were trained).

    State dict: ``streams.<m>.backbone.*`` (read by ``encoder_state_dicts``) and
    ``streams.<m>.head.*``.
    """

    #: Batch entries the training loop passes to ``forward`` (besides ``epoch``).
    inputs = ("view1", "frames", "label")

    def __init__(self, streams: nn.ModuleDict, bone_pairs="ikem", true_timeline=True, layout=None):
        super().__init__()
        self.streams = streams
        self.modalities = tuple(streams)
        self.bone_pairs, self.true_timeline, self.layout = bone_pairs, bool(true_timeline), layout

    def logits(self, x: dict) -> torch.Tensor:
        """(K, N, C) logits of each modality from ``x`` = {modality: (N, 3, T, 25, M)}."""
        return torch.stack([self.streams[m](x[m])[0] for m in self.modalities])

    def forward(self, view1, frames, label, epoch):
        """Cross-entropy of the averaged logits. view1 (N, 3, T, 25, M) joint, frames (N,), label (N,)."""
        x = compute_modalities(view1, frames, self.modalities, self.bone_pairs, self.true_timeline, self.layout)
        loss = F.cross_entropy(self.logits(x).mean(0).float(), label)
        return {"loss": loss}
