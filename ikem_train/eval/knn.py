"""Cosine k-nearest-neighbour classification of frozen features (KNN retrieval).

The protocol of UmURL's ``action_retrieval.py`` (HuiGuanLab/UmURL; also AimCLR, CMD):
L2-normalised features of the train split are the gallery, each val sample takes the
label of its nearest train sample by cosine similarity (k = 1), top-1 on val.

Several modalities are fused by concatenating their L2-normalised features and
normalising again: the cosine of two such vectors is the *mean* of the per-modality
cosines, so every modality weighs the same whatever its feature scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fuse_features(features: torch.Tensor) -> torch.Tensor:
    """(n, K, D) features -> (n, K·D) unit vectors: each modality normalised, then the concatenation."""
    return F.normalize(F.normalize(features.float(), dim=-1).flatten(1), dim=-1)


@torch.no_grad()
def knn_predict(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, k: int = 1,
                chunk: int = 1024) -> torch.Tensor:
    """Predicted label of each query by cosine k-NN over the gallery.

    Args:
        gallery: (n, D) float features (normalised here). gallery_labels: (n,) int64.
        queries: (m, D) float features (normalised here).
        k: neighbours. k = 1: the label of the most similar gallery sample; an exact tie
            in similarity goes to the lower gallery index. k > 1: majority vote among
            the k most similar; a tie in votes goes to the tied class met first in order of
            similarity (the order among exactly equal similarities is then unspecified).
        chunk: queries per block (bounds memory to chunk × n similarities).

    Returns:
        (m,) int64 predicted labels.

    Raises:
        ValueError: k < 1 or k larger than the gallery.
    """
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k = {k} must be between 1 and the {len(gallery)} train samples")
    gallery = F.normalize(gallery.float(), dim=1)
    gallery_labels = gallery_labels.to(gallery.device)
    num_class = int(gallery_labels.max()) + 1
    out = []
    for start in range(0, len(queries), chunk):
        q = F.normalize(queries[start : start + chunk].float().to(gallery.device), dim=1)
        sim = q @ gallery.T  # (b, n) cosine similarities
        if k == 1:
            out.append(gallery_labels[sim.argmax(dim=1)])  # argmax returns the first maximum
            continue
        nearest = gallery_labels[sim.topk(k, dim=1).indices]  # (b, k), most similar first
        votes = F.one_hot(nearest, num_class).sum(dim=1)  # (b, C)
        top = votes.gather(1, nearest) == votes.max(dim=1, keepdim=True).values  # (b, k): a winning class?
        first = top.to(torch.int8).argmax(dim=1, keepdim=True)  # the most similar neighbour of a winner
        out.append(nearest.gather(1, first).squeeze(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)
