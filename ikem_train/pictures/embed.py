"""A 2D map of frozen features (``ikem-train embed``): t-SNE of the val split, coloured by class.

The features come from the shared evaluation path (:mod:`ikem_train.eval.features` through
``ikem_train.jobs.FrozenFeatures``): encoders loaded strictly from the checkpoint (or
randomly initialised), the store checked against them, optional BatchNorm
recalibration on the train split, eval-mode extraction, the health check. Only the val
samples drawn are run through the encoders.

Each modality's features are L2-normalised and, for ``fused``, concatenated and
normalised again (:func:`ikem_train.eval.knn.fuse_features`, the KNN evaluation's fusion), so
Euclidean distances in the map's input follow the cosine similarities KNN uses.

t-SNE is scikit-learn's ``sklearn.manifold.TSNE`` (PCA initialisation, learning rate
"auto", perplexity ``min(30, (n - 1) / 3)``, ``random_state`` = ``data.seed``): the
picture is reproducible for one seed, but t-SNE keeps neighbourhoods, not distances
between clusters or their sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ikem_train.pictures.plots import new_figure, save_figure

FUSED = "fused"
DEFAULT_MAX_SAMPLES = 2000
MIN_SAMPLES = 5
#: (width, height) pixels of the picture.
EMBED_PX = (1200, 900)


class EmbedError(ValueError):
    """Options that cannot make an embedding (output, modality, too few samples); the message says why."""


def subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_samples`` of ``n`` items, drawn without replacement
    by ``numpy.random.default_rng(seed)`` (all of them when ``n <= max_samples`` or None)."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_samples), replace=False))


def tsne_2d(features: np.ndarray, seed: int) -> np.ndarray:
    """(n, D) features -> (n, 2) t-SNE coordinates (scikit-learn; see the module docstring).

    Raises:
        EmbedError: fewer than :data:`MIN_SAMPLES` rows.
    """
    from sklearn.manifold import TSNE

    n = len(features)
    if n < MIN_SAMPLES:
        raise EmbedError(f"t-SNE needs at least {MIN_SAMPLES} samples, the val split gives {n}")
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float64)).astype(np.float32)


def _colours(num_class):
    """One colour per class: tab10 / tab20 when they suffice, else evenly spaced turbo hues."""
    from matplotlib import colormaps

    if num_class <= 10:
        return [colormaps["tab10"](c) for c in range(num_class)]
    if num_class <= 20:
        return [colormaps["tab20"](c) for c in range(num_class)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, num_class)]


def plot_embedding(xy, labels, names, out, title="") -> dict:
    """Scatter (n, 2) ``xy`` coloured by ``labels`` with a legend of class ``names``.

    Returns:
        ``{"path", "size"}`` (:data:`EMBED_PX`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    figure = new_figure(*EMBED_PX, layout="constrained")
    ax = figure.subplots()
    colours = _colours(len(present))
    markers = "os^Dv" if len(present) > 20 else "o"
    size, alpha = (30, 1.0) if len(labels) <= 200 else (16, 0.9) if len(labels) <= 1000 else (8, 0.7)
    for k, c in enumerate(present):
        mask = labels == c
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colours[k], marker=markers[k % len(markers)],
                   label=f"{names[c]} ({int(mask.sum())})", alpha=alpha, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    columns = 1 if len(present) <= 30 else 2 if len(present) <= 60 else 3
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8 if len(present) <= 30 else 5,
              ncol=columns, markerscale=1.5, frameon=False, title="class (val samples)")
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(figure, Path(out))
    return {"path": str(out), "size": EMBED_PX}


def feature_state(health: dict, recalibrated: bool) -> str:
    """What a t-SNE title must say about its features: t-SNE draws clean clusters even of
    collapsed features (it rescales any spread), so collapse and BN statistics are named."""
    collapsed = [m for m, h in health.items() if h["collapsed"]]
    bn = "BN statistics recomputed on train" if recalibrated else "BN statistics as trained"
    return f"COLLAPSED features ({', '.join(collapsed)}), {bn}" if collapsed else f"features not collapsed, {bn}"


def embed(store, benchmark, out, *, checkpoint=None, random_init=False, modality=FUSED,
          max_samples=DEFAULT_MAX_SAMPLES, config=None, overrides=(), log=print) -> dict:
    """t-SNE map of the frozen val features of a checkpoint's encoders, written to ``out`` (.png).

    Args:
        store, benchmark: the store and the benchmark whose val split is drawn.
        out: the picture (``.png``; :data:`EMBED_PX` pixels).
        checkpoint: pretrain, distill or finetune checkpoint; or ``random_init`` for freshly
            initialised encoders (seed ``data.seed``, modalities and widths from the config).
        modality: one modality (``joint``, ``bone``, ...), a comma list, or ``fused`` (every
            encoder); several are fused (each modality's features normalised, concatenated).
        max_samples: at most this many val samples, drawn by ``data.seed`` (None: all).
        config, overrides: the run config as in :mod:`ikem_train.jobs` (``data.seed``,
            ``data.eval_batch_size``, ``evaluation.bn_recalibrate``, ``run.device``).

    Returns:
        ``{"path", "size", "title", "modalities", "samples", "val_samples", "num_class",
        "feature_health", "source"}``; the title says whether the features collapsed and
        which BN statistics they were computed with.

    Raises:
        EmbedError: an output that is not ``.png``, ``max_samples`` < 5, too few samples.
        OutputError: ``out`` is a folder (or pipe, device), or its folder cannot be made.
        ConfigError, CheckpointError, EvaluationError (a modality the checkpoint lacks,
        store/checkpoint mismatch, non-finite features), StoreError, KeyError (benchmark).
        Nothing is written when any is raised.
    """
    from ikem_data.class_names import store_class_names
    from ikem_data.outputs import check_output_file
    from ikem_data.store import open_store
    from ikem_train.eval import features as ev
    from ikem_train.config import load_config
    from ikem_train.data.datasets import ModalityDataset
    from ikem_train.jobs import FrozenFeatures
    from ikem_train.eval.knn import fuse_features

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise EmbedError(f"cannot write {out.name!r}: the map is a picture, give an output ending in .png")
    check_output_file(out)  # before the features and t-SNE, not after them
    if max_samples is not None and int(max_samples) < MIN_SAMPLES:
        raise EmbedError(f"--max-samples {max_samples}: t-SNE needs at least {MIN_SAMPLES} samples")
    cfg = load_config(config, overrides)
    requested = None if modality in (None, FUSED, "all") else modality
    frozen = FrozenFeatures(store, benchmark, cfg, checkpoint, random_init, requested)
    positions = subsample(len(frozen.val_ds), max_samples, cfg.data.seed)
    if len(positions) < MIN_SAMPLES:
        raise EmbedError(f"t-SNE needs at least {MIN_SAMPLES} samples; {benchmark} val has {len(positions)}")
    val = ModalityDataset(store, benchmark, "val", frozen.inputs, positions=positions)
    device, batch, workers = frozen.prepare(log)
    features, labels, _ = ev.extract_features(frozen.encoders, val, batch, device, workers)
    health = frozen.health_of(features, log)
    xy = tsne_2d(fuse_features(features).numpy(), cfg.data.seed)
    with open_store(store, "r") as handle:
        names = store_class_names(handle, frozen.num_class)
    what = (frozen.names[0] if len(frozen.names) == 1 else f"{' + '.join(frozen.names)} fused" if len(frozen.names) <= 3
            else f"{len(frozen.names)} modalities fused")
    source = ("random init" if frozen.source["random_init"]
              else f"{Path(str(checkpoint)).name} ({frozen.source['checkpoint_kind']})")
    shown = f"{len(positions)} of {len(frozen.val_ds)}" if len(positions) < len(frozen.val_ds) else f"{len(positions)}"
    title = (f"t-SNE of frozen {what} features, {source}\n{benchmark} val, {shown} samples; "
             f"{feature_state(health, cfg.evaluation.bn_recalibrate)}")
    picture = plot_embedding(xy, labels.numpy(), names, out, title)
    log(f"t-SNE of {shown} {benchmark} val samples ({what} features) -> {out}")
    return {**picture, "title": title, "modalities": list(frozen.names), "samples": int(len(positions)),
            "val_samples": int(len(frozen.val_ds)), "num_class": int(frozen.num_class), "feature_health": health,
            "source": frozen.source}
