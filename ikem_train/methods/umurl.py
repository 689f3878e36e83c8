"""UmURL pretraining (Sun et al., ACM MM 2023; code HuiGuanLab/UmURL at 744278b): augmentations,
the four-view dataset, the consistency losses with variance / covariance regularisation, the
model that follows the training loop's contract, and its optimizer.

One step (UmURL ``pretrain.py::train``): four independently augmented views of a sample;
view 1 gives the joint, view 2 the bone, view 3 the motion tokens (uni-modal features
``y_j, y_b, y_m``); view 4 all three, fused early (``y_u``). Each modality has its projector
``P_m``: ``z_m = P_m(y_m)`` and ``z_um = P_m(y_u)`` (the fused feature decomposed). Loss::

    intra = Σ_m mse(z_m, z_um)                      (intra-modal consistency)
    inter = Σ_m mse(z_m, (z_j + z_b + z_m') / 3)    (inter-modal consistency; the centre is not detached)
    reg   = Σ over the six z of  w_v · mean_d relu(1 - sqrt(var_d + eps)) + w_c · Σ_{i≠j} cov_ij² / D
    loss  = w · (intra + inter) + reg               (w = 5, w_v = 5, w_c = 1, eps = 1e-4)

``mse`` is the mean over batch and dimensions; variances and covariances are unbiased
(B - 1) over the batch. Under torchrun the six projections are gathered from every rank with
their gradients, so the loss is that of the global batch, as in one process (UmURL's
``FullGatherLayer``).

Inputs: the store's preprocessed joints (``modalities/joint``, ikem's centring, resize to
``t_length`` frames and y-alignment; UmURL's own data is 2s-AGCN's normalisation of up to
300 raw frames). Bone and motion are computed from each augmented view's joints, as UmURL
does (:func:`ikem_train.nets.umurl.modality`); the store's bone and motion are not read.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ikem_train.data.datasets import PretrainDataset
from ikem_train.nets.umurl import UMURL_MODALITIES, UmURLBackbone, projector
from ikem_train.training import distributed

# -- augmentations (UmURL feeder/augmentations.py), numpy, one sample (C, T, V, M) -------------


def crop_window(valid_frames: int, low: float, high: float, min_frames: int, rng) -> tuple[int, int]:
    """UmURL's temporal crop in original frames: ``(start, length)``.

    ``length = min(max(floor(L · s), min_frames), L)`` with ``s ~ U(low, high)`` and
    ``start ~ U{0, …, L - length}`` (``temporal_cropresize``).
    """
    scale = rng.uniform(low, high)
    length = int(min(max(int(np.floor(valid_frames * scale)), min_frames), valid_frames))
    start = int(rng.integers(0, valid_frames - length + 1))
    return start, length


def crop_resize(x: np.ndarray, valid_frames: int, low: float, high: float, min_frames: int, rng) -> np.ndarray:
    """Temporal crop-resize of a stored sequence to its own length T.

    The stored ``x`` (C, T, V, M) is ``valid_frames`` (L) original frames resized to T
    (half-pixel centres: stored frame q sits at original position ``(q + 0.5)·L/T - 0.5``).
    UmURL's window (:func:`crop_window`) is resampled to T frames as its code does
    (``F.interpolate(mode="bilinear", align_corners=False)`` over ``length`` frames: output
    frame i at original position ``start + clamp((i + 0.5)·length/T - 0.5, 0, length - 1)``);
    those positions are mapped into the stored frames and read by linear interpolation.
    A full-length window gives ``x`` back.

    Returns:
        (C, T, V, M) float32.
    """
    t = x.shape[1]
    frames = max(int(valid_frames), 1)
    start, length = crop_window(frames, low, high, min_frames, rng)
    original = start + np.clip((np.arange(t) + 0.5) * length / t - 0.5, 0, length - 1)
    pos = np.clip((original + 0.5) * t / frames - 0.5, 0, t - 1)  # in stored frames
    left = np.floor(pos).astype(np.int64)
    right = np.minimum(left + 1, t - 1)
    frac = (pos - left).astype(np.float32)[None, :, None, None]
    return (x[:, left] * (1 - frac) + x[:, right] * frac).astype(np.float32)


def joint_corruption(x: np.ndarray, count: int, amplitude: float, rng) -> np.ndarray:
    """UmURL ``joint_courruption``: ``count`` distinct joints are, with probability 1/2, zeroed;
    otherwise their coordinates are mixed by one 3×3 matrix ``A`` of U(-a, a) entries,
    ``p' = Aᵀ p`` (the code's ``p · A``). (C, T, V, M) -> (C, T, V, M) float32."""
    out = x.copy()
    picked = rng.choice(x.shape[2], size=min(count, x.shape[2]), replace=False)
    if rng.random() < 0.5:
        out[:, :, picked] = 0
    else:
        mix = rng.uniform(-amplitude, amplitude, size=(3, 3))
        out[:, :, picked] = np.einsum("ij,itvm->jtvm", mix, x[:, :, picked])
    return out.astype(np.float32, copy=False)


def pose_shear(x: np.ndarray, amplitude: float, rng) -> np.ndarray:
    """UmURL ``pose_augmentation``: ``p' = S p`` with ``S`` unit diagonal and U(-a, a) elsewhere."""
    s = np.eye(3) + rng.uniform(-amplitude, amplitude, size=(3, 3)) * (1 - np.eye(3))
    return np.einsum("ij,jtvm->itvm", s, x).astype(np.float32)


def umurl_view(x: np.ndarray, valid_frames: int, rng, cfg) -> np.ndarray:
    """One UmURL view: crop-resize, then (probability 1/2 each) joint corruption or shear.

    Args:
        x: (3, T, V, M) float32 stored joints. valid_frames: the frames the store resized.
        cfg: the ``umurl`` section (or any object with its augmentation fields).
    """
    view = crop_resize(x, valid_frames, cfg.crop_ratio_min, cfg.crop_ratio_max, cfg.min_crop_frames, rng)
    if rng.random() < 0.5:
        return joint_corruption(view, cfg.corrupted_joints, cfg.spatial_amplitude, rng)
    return pose_shear(view, cfg.spatial_amplitude, rng)


class UmURLDataset(PretrainDataset):
    """Four UmURL views of each stored joint sequence (``view1`` … ``view4``, each
    (B, 3, T, V, M) float32), plus ``frames``, ``label``, ``index`` as :class:`PretrainDataset`.

    Args:
        store_path, benchmark, part, seed, rank: as :class:`PretrainDataset` (its per-worker
            streams, so a resume and each rank draw as there).
        cfg: the ``umurl`` config section.

    Raises:
        StoreError: the store lacks ``modalities/valid_length``; as :class:`PretrainDataset`.
    """

    def __init__(self, store_path, benchmark, cfg, part="train", seed=0, rank=0):
        super().__init__(store_path, benchmark, part, shear=-1, crop_ratio=-1, seed=seed, views=1, rank=rank)
        from ikem_data.store import open_store
        from ikem_train.data.datasets import StoreError

        with open_store(self.store_path, "r") as store:
            if "modalities/valid_length" not in store:
                raise StoreError(f"store {store_path} has no modalities/valid_length; rebuild it with "
                                 "`ikem-data modalities`")
            lengths = np.asarray(store["modalities/valid_length"][...])
        self.valid_length = lengths[self.indices].astype(np.int64)
        self.cfg = cfg

    def __getitem__(self, item):
        epoch, positions = item
        positions = np.asarray(positions, dtype=np.int64)
        joint = self._read("joint", positions)
        rng = self.rng(epoch)
        out = {"frames": torch.from_numpy(self.frames[positions]), "label": torch.from_numpy(self.labels[positions]),
               "index": torch.from_numpy(self.indices[positions])}
        views = [[umurl_view(x, n, rng, self.cfg) for x, n in zip(joint, self.valid_length[positions])]
                 for _ in range(4)]
        for k, view in enumerate(views, start=1):
            out[f"view{k}"] = torch.from_numpy(np.stack(view))
        return out


# -- losses -------------------------------------------------------------------------------------


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The D·(D-1) off-diagonal entries of a (D, D) matrix, row by row."""
    d = matrix.shape[0]
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def variance_loss(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``mean_d relu(1 - sqrt(var_d(z) + eps))``, var unbiased over the batch. z (B, D), B >= 2."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """``Σ_{i≠j} C_ij² / D``, ``C = (z - mean)ᵀ (z - mean) / (B - 1)``. z (B, D), B >= 2."""
    b, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (b - 1)
    return off_diagonal(cov).pow(2).sum() / d


def umurl_losses(z: dict, z_fused: dict, consistency_weight=5.0, variance_weight=5.0, covariance_weight=1.0,
                 eps=1e-4) -> dict:
    """UmURL's loss and its parts (module docstring; ``pretrain.py::train``).

    Args:
        z: modality -> (B, D) uni-modal projections ``z_m``; z_fused: modality -> (B, D)
            projections of the fused feature ``z_um``, the same modalities (j, b, m).

    Returns:
        ``loss`` (scalar), ``intra``, ``inter``, ``variance``, ``covariance`` (unweighted sums
        over the modalities / the six projections); ``loss = w·(intra + inter) + w_v·variance
        + w_c·covariance``.
    """
    names = list(z)
    intra = sum(F.mse_loss(z[m], z_fused[m]) for m in names)
    centre = sum(z[m] for m in names) / len(names)
    inter = sum(F.mse_loss(z[m], centre) for m in names)
    every = [z[m] for m in names] + [z_fused[m] for m in names]
    variance = sum(variance_loss(x, eps) for x in every)
    covariance = sum(covariance_loss(x) for x in every)
    loss = consistency_weight * (intra + inter) + variance_weight * variance + covariance_weight * covariance
    return {"loss": loss, "intra": intra, "inter": inter, "variance": variance, "covariance": covariance}


class _GatherWithGrad(torch.autograd.Function):
    """Every rank's (B, D) rows concatenated in rank order; the backward sums the gradient
    over ranks and keeps this rank's rows (each rank computes the same global loss, and DDP
    then averages: the one-process gradient)."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = x.shape[0]
        return distributed.all_gather_cat(x)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank = dist.get_rank()
        return grad[rank * ctx.rows:(rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (world·B, D) with gradients under torchrun; ``x`` itself in one process."""
    return x if distributed.world_size() == 1 else _GatherWithGrad.apply(x)


# -- the model ----------------------------------------------------------------------------------


class UmURLModel(nn.Module):
    """UmURL pretraining: the backbone and three modality-aware projectors.

    Args:
        backbone: keyword arguments of :class:`ikem_train.nets.umurl.UmURLBackbone`.
        projector_dim: output width of each projector (4096); the projectors' hidden
            width is the feature width 2h.
        consistency_weight, variance_weight, covariance_weight, variance_eps: of :func:`umurl_losses`.

    State dict: ``backbone.*`` (what evaluation loads), ``projector.<joint|bone|motion>.*``.
    """

    #: Batch entries the training loop passes to ``forward`` (besides ``epoch``).
    inputs = ("view1", "view2", "view3", "view4")
    modalities = UMURL_MODALITIES

    def __init__(self, backbone: dict, projector_dim=4096, consistency_weight=5.0, variance_weight=5.0,
                 covariance_weight=1.0, variance_eps=1e-4):
        super().__init__()
        self.backbone = UmURLBackbone(**backbone)
        width = self.backbone.feature_dim
        self.projector = nn.ModuleDict({m: projector(width, projector_dim) for m in UMURL_MODALITIES})
        self.weights = dict(consistency_weight=float(consistency_weight), variance_weight=float(variance_weight),
                            covariance_weight=float(covariance_weight), eps=float(variance_eps))

    def projections(self, view1, view2, view3, view4):
        """``(z, z_fused)``: modality -> (B, D) projections of the uni-modal views (joint of
        view 1, bone of view 2, motion of view 3) and of view 4's fused feature."""
        single = {m: self.backbone.single(v, m) for m, v in zip(UMURL_MODALITIES, (view1, view2, view3))}
        fused = self.backbone.fused(view4)
        z = {m: self.projector[m](single[m]) for m in UMURL_MODALITIES}
        z_fused = {m: self.projector[m](fused) for m in UMURL_MODALITIES}
        return z, z_fused

    def forward(self, view1, view2, view3, view4, epoch):
        """One step's loss. Views (N, 3, T, V, M) float32 augmented joints; ``epoch`` unused.

        Returns:
            ``"loss"`` (scalar with grad) and detached ``"loss/<intra|inter|variance|covariance>"``.
        """
        z, z_fused = self.projections(view1, view2, view3, view4)
        with torch.autocast(view1.device.type, enabled=False):  # the covariances in float32
            z = {m: gather_with_grad(v.float()) for m, v in z.items()}
            z_fused = {m: gather_with_grad(v.float()) for m, v in z_fused.items()}
            parts = umurl_losses(z, z_fused, **self.weights)
        out = {"loss": parts.pop("loss")}
        out.update({f"loss/{name}": value.detach() for name, value in parts.items()})
        return out


    def make_optimizer(self, params, cfg):
        """The training loop's optimizer for this model: :func:`umurl_optimizer` of ``cfg.umurl``."""
        return umurl_optimizer(params, cfg.umurl)

    @staticmethod
    def lr_at_epoch(epoch, cfg):
        """The training loop's lr for 1-based ``epoch``: :func:`umurl_lr`."""
        return umurl_lr(epoch, cfg.umurl, cfg.optim)


def umurl_optimizer(params, umurl_cfg):
    """UmURL's optimizer: ``torch.optim.Adam`` (the code; weight decay added to the gradient)
    or ``AdamW`` (decoupled decay), lr ``umurl.lr`` (5e-4), weight decay ``umurl.weight_decay`` (1e-5)."""
    cls = torch.optim.AdamW if umurl_cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=umurl_cfg.lr, weight_decay=umurl_cfg.weight_decay)


def umurl_lr(epoch: int, umurl_cfg, optim_cfg) -> float:
    """The lr of 1-based ``epoch``: ``umurl.lr · gamma^#(milestones < epoch)``, times
    ``epoch / warmup_epochs`` during the warm-up (UmURL's code: a step at 351 of 451, no warm-up)."""
    lr = umurl_cfg.lr * optim_cfg.gamma ** sum(1 for m in optim_cfg.milestones if epoch > m)
    if umurl_cfg.warmup_epochs and epoch <= umurl_cfg.warmup_epochs:
        lr *= epoch / umurl_cfg.warmup_epochs
    return lr


class UmURLFinetuneModel(nn.Module):
    """A UmURL backbone and a ``Linear(2h, num_class)`` per feature, logits averaged (UmURL
    ``Downstream``: the fused feature and one classifier), for fine-tuning.

    Args:
        backbone: :class:`ikem_train.nets.umurl.UmURLBackbone` keyword arguments.
        features: feature names (``multimodal``, ``joint``, ``bone``, ``motion``).
        num_class: C.

    State dict: ``backbone.*`` (what evaluation loads), ``heads.<feature>.*``.
    """

    inputs = ("view1", "frames", "label")

    def __init__(self, backbone: dict, features, num_class: int):
        super().__init__()
        self.backbone = UmURLBackbone(**backbone)
        self.features = tuple(features)
        self.heads = nn.ModuleDict({m: nn.Linear(self.backbone.feature_dim, num_class) for m in self.features})

    def logits(self, x: dict) -> torch.Tensor:
        """(K, N, C) logits of each feature from ``x`` = {feature: (N, 3, T, V, M) joints}."""
        return torch.stack([self.heads[m](self.backbone.feature(x[m], m)) for m in self.features])

    def forward(self, view1, frames, label, epoch):
        """Cross-entropy of the averaged logits; view1 (N, 3, T, V, M) augmented joints, label (N,)."""
        loss = F.cross_entropy(self.logits({m: view1 for m in self.features}).mean(0).float(), label)
        return {"loss": loss}
