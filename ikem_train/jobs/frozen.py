"""Frozen-feature evaluation jobs: :func:`linear` and :func:`knn`, sharing one feature extraction
(:class:`FrozenFeatures`, :func:`frozen_evaluation`).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ikem_train.checkpoint import atomic_file, save_checkpoint
from ikem_train.config import Config, config_to_dict, load_config
from ikem_train.data.datasets import ModalityDataset
from ikem_train.eval import features as ev
from ikem_train.jobs.common import count_classes, encoder_source, read_val_names, reading_store, write_config, write_json
from ikem_train.training import distributed
from ikem_train.training.loop import resolve_device, run_folder


def _encoders(cfg: Config, store, checkpoint, random_init: bool, modalities):
    """(encoders, names, model config dict, trained-on store params, source entries)."""
    if checkpoint is not None and random_init:
        raise ev.EvaluationError("give --checkpoint or --random-init, not both")
    if checkpoint is None and not random_init:
        raise ev.EvaluationError("give --checkpoint (a pretrain, distill or finetune checkpoint) or --random-init")
    ck, names, model_cfg = encoder_source(cfg, store, checkpoint, modalities)
    if ck is None:
        return (ev.random_encoders(model_cfg, names, cfg.data.seed), names, model_cfg, None,
                {"checkpoint": None, "checkpoint_kind": None, "random_init": True})
    return (ev.load_encoders(ck, names), names, model_cfg, ck.get("store_params"),
            {"checkpoint": str(checkpoint), "checkpoint_kind": ck["kind"], "random_init": False})


class FrozenFeatures:
    """Features of the train and val splits from frozen encoders, with their checks
    (also used by :mod:`ikem_train.pictures.embed`).

    Construction loads the encoders (:func:`encoder_source`), checks the store against them and
    opens both splits; :meth:`extract` then sets ``x_train``, ``x_val`` (n, K, hidden_dim)
    float32, ``y_train``, ``y_val``, ``i_val`` (n,) int64, ``val_names`` and ``health``.

    Raises:
        EvaluationError: both or neither of ``checkpoint`` and ``random_init``, a store that
            does not match the encoders (:func:`ikem_train.eval.features.check_store_agrees`),
            ``data.num_class`` below the labels. CheckpointError, StoreError, KeyError (benchmark).
    """

    def __init__(self, store, benchmark, cfg: Config, checkpoint, random_init, modalities):
        self.encoders, self.names, self.model_cfg, trained_on, self.source = _encoders(
            cfg, store, checkpoint, random_init, modalities)
        self.store_params = ev.check_store_agrees(store, self.model_cfg, trained_on)
        self.inputs = ev.input_modalities(self.encoders)  # the store arrays the encoders read
        self.train_ds = ModalityDataset(store, benchmark, "train", self.inputs)
        self.val_ds = ModalityDataset(store, benchmark, "val", self.inputs)
        self.num_class = count_classes(cfg, self.train_ds.labels, self.val_ds.labels)
        self.store, self.benchmark, self.cfg = store, benchmark, cfg

    def prepare(self, log):
        """Move the encoders to the run's device and recalibrate their BN when asked.

        Returns:
            ``(device, eval batch size, DataLoader workers)`` for :func:`ev.extract_features`.
        """
        cfg = self.cfg
        device = resolve_device(cfg.run.device)
        self.encoders.to(device)
        batch, workers = cfg.data.eval_batch_size, cfg.data.num_workers
        if cfg.evaluation.bn_recalibrate:
            ev.recalibrate_bn(self.encoders, self.train_ds, batch, device, workers)
            log(f"BatchNorm statistics recomputed over {len(self.train_ds)} train samples")
        return device, batch, workers

    def health_of(self, features, log) -> dict:
        """:func:`ev.feature_health` of (n, K, D) features, the collapse warning logged."""
        threshold = self.cfg.evaluation.collapse_threshold
        health = ev.feature_health(features, self.names, threshold)
        warning = ev.collapse_warning(health, threshold, self.cfg.evaluation.bn_recalibrate)
        if warning:
            log(warning)
        return health

    def extract(self, log):
        """Recalibrate BN when asked, extract, check health; sets x/y/index and health."""
        device, batch, workers = self.prepare(log)
        self.snapshot = ev.parameter_snapshot(self.encoders)
        t0 = time.perf_counter()
        self.x_train, self.y_train, _ = ev.extract_features(self.encoders, self.train_ds, batch, device, workers)
        self.x_val, self.y_val, self.i_val = ev.extract_features(self.encoders, self.val_ds, batch, device, workers)
        self.val_names = read_val_names(self.store, self.i_val)  # SsssCcccPpppRrrrAaaa, in feature order
        log(f"features of {len(self.x_train)} train and {len(self.x_val)} val samples "
            f"in {time.perf_counter() - t0:.1f} s")
        self.health = self.health_of(self.x_train, log)
        self.device = device

    def unchanged(self) -> bool:
        """Whether the frozen encoders still equal their state before feature extraction."""
        changed = ev.changed_parameters(self.snapshot, self.encoders)
        if changed:
            raise ev.EvaluationError(f"frozen encoder weights changed during evaluation: {changed[:5]}")
        return True

    def results(self, job, run) -> dict:
        """The entries every frozen-feature results.json shares."""
        return {"job": job, **self.source, "store": str(self.store), "benchmark": self.benchmark,
                "modalities": list(self.names), "fused": len(self.names) > 1, "num_class": self.num_class,
                "graph_partition": self.model_cfg.get("graph_partition"), "store_params": self.store_params,
                "bn_recalibrate": self.cfg.evaluation.bn_recalibrate, "feature_health": self.health,
                "train_samples": len(self.y_train), "val_samples": len(self.y_val), "run": str(run)}


PROTOCOLS = ("linear", "knn")


def frozen_evaluation(store, benchmark, run_dirs: dict, *, checkpoint=None, random_init=False, modalities=None,
                      config=None, overrides=(), log=print) -> dict:
    """Linear and/or KNN evaluation of frozen encoders, sharing one feature extraction.

    Args:
        run_dirs: ``{"linear": folder, "knn": folder}`` (either or both): one run folder
            per protocol, each with its own config.yaml and results.json.
        checkpoint: pretrain, distill or finetune checkpoint; or ``random_init`` for
            freshly initialised encoders (seed ``data.seed``; widths from the config).
        modalities: names, a comma string, ``"all"`` or None (the checkpoint's).

    Returns:
        ``{protocol: results}``, each the dict written to that folder's results.json
        (see :func:`linear` and :func:`knn`); None on ranks >= 1 under torchrun: the
        evaluation runs on rank 0 alone (one extraction; the other processes exit).

    Raises:
        ConfigError, CheckpointError, EvaluationError (bad options, store/checkpoint
        mismatch, k too large, non-finite features), StoreError, KeyError.
    """
    if not distributed.launch_env().is_main:
        return None
    unknown = sorted(set(run_dirs) - set(PROTOCOLS))
    if unknown or not run_dirs:
        raise ev.EvaluationError(f"unknown evaluation protocol(s) {unknown}; valid: {', '.join(PROTOCOLS)}")
    cfg = load_config(config, overrides)
    with ExitStack() as held:
        watch = held.enter_context(reading_store(store))  # no writer changes the store while it is read
        frozen = FrozenFeatures(store, benchmark, cfg, checkpoint, random_init, modalities)
        if "knn" in run_dirs and cfg.evaluation.knn_k > len(frozen.train_ds):
            raise ev.EvaluationError(f"--k {cfg.evaluation.knn_k} is larger than the {len(frozen.train_ds)} train "
                                     f"samples of {benchmark}")
        runs = {protocol: held.enter_context(run_folder(folder, False, log, resumable=False))
                for protocol, folder in run_dirs.items()}
        for run in runs.values():
            write_config(run, cfg)
        frozen.extract(log)
        watch.verify()  # the features are all read: the store they came from has not changed
        protocols = {"linear": _linear_protocol, "knn": _knn_protocol}
        return {protocol: protocols[protocol](frozen, cfg, run, log) for protocol, run in runs.items()}


def linear(store, benchmark, run_dir, **options) -> dict:
    """Linear evaluation (METHOD.md §8): frozen encoders, new linear classifiers, val top-1/top-5.

    Options as :func:`frozen_evaluation`. Returns (None on ranks >= 1 under torchrun) the
    dict written to ``results.json``: ``final`` and ``best_on_val`` records of the fused
    classifier (its records also give
    ``head_top1/<modality>``, each of its heads alone), ``per_modality_top1`` (a classifier
    trained on each modality alone, same settings), per-class accuracy, baselines,
    feature health, ``encoder_unchanged``.
    """
    results = frozen_evaluation(store, benchmark, {"linear": run_dir}, **options)
    return None if results is None else results["linear"]


def knn(store, benchmark, run_dir, **options) -> dict:
    """KNN retrieval: cosine k-NN (k = ``evaluation.knn_k``) of val features among train features.

    Options as :func:`frozen_evaluation`. Returns (None on ranks >= 1 under torchrun) the
    dict written to ``results.json``: ``top1`` {modality..., "fused"} (:func:`ikem_train.eval.knn.fuse_features`), ``k``,
    per-class accuracy of the fused prediction, baselines, feature health.
    """
    results = frozen_evaluation(store, benchmark, {"knn": run_dir}, **options)
    return None if results is None else results["knn"]


def _linear_protocol(frozen: FrozenFeatures, cfg: Config, run: Path, log) -> dict:
    from ikem_train.eval.linear import BEST_LABEL, fit_linear

    fit = fit_linear(frozen.x_train, frozen.y_train, frozen.x_val, frozen.y_val, frozen.names, cfg.linear,
                     frozen.num_class, seed=cfg.data.seed, device=frozen.device, metrics_path=run / "metrics.jsonl",
                     log=log)
    alone = {frozen.names[0]: fit["final"]["top1"]} if len(frozen.names) == 1 else {  # each its own classifier
        m: fit_linear(frozen.x_train[:, k:k + 1], frozen.y_train, frozen.x_val[:, k:k + 1], frozen.y_val, [m],
                      cfg.linear, frozen.num_class, seed=cfg.data.seed, device=frozen.device,
                      log=lambda *a: None)["final"]["top1"]
        for k, m in enumerate(frozen.names)}
    unchanged = frozen.unchanged()
    per, names = fit["logits"], frozen.names
    fused = per.mean(0)
    scores = {"fused": fused.numpy(), "label": frozen.y_val.numpy(), "index": frozen.i_val.numpy(),
              "name": frozen.val_names, "modalities": np.array(names),
              **{f"logits/{m}": per[k].numpy() for k, m in enumerate(names)}}
    with atomic_file(run / "scores.npz") as fh:
        np.savez(fh, **scores)
    save_checkpoint(run / "classifier.pt", {
        "model": fit["heads"].state_dict(), "kind": "linear", "epoch": cfg.linear.epochs, "modalities": list(names),
        "config": config_to_dict(cfg), "checkpoint": frozen.source["checkpoint"]})
    results = {
        **frozen.results("linear", run),
        "final": {k: v for k, v in fit["final"].items() if k != "lr"},
        "best_on_val": {"note": BEST_LABEL, **{k: v for k, v in fit["best"].items() if k != "lr"}},
        "per_modality_top1": alone,
        **ev.class_report(fused.argmax(1), frozen.y_val, frozen.y_train, frozen.num_class),
        "encoder_unchanged": unchanged,
    }
    write_json(run / "results.json", results)
    return results


def _knn_protocol(frozen: FrozenFeatures, cfg: Config, run: Path, log) -> dict:
    from ikem_train.eval.knn import fuse_features, knn_predict

    k = cfg.evaluation.knn_k
    preds = {m: knn_predict(frozen.x_train[:, i], frozen.y_train, frozen.x_val[:, i], k)
             for i, m in enumerate(frozen.names)}
    if len(frozen.names) > 1:
        preds["fused"] = knn_predict(fuse_features(frozen.x_train), frozen.y_train, fuse_features(frozen.x_val), k)
    top1 = {m: float((p == frozen.y_val).float().mean()) for m, p in preds.items()}
    overall = preds.get("fused", preds[frozen.names[0]])
    with atomic_file(run / "predictions.npz") as fh:
        np.savez(fh, label=frozen.y_val.numpy(), index=frozen.i_val.numpy(), name=frozen.val_names,
                 **{f"pred/{m}": p.numpy() for m, p in preds.items()})
    results = {**frozen.results("knn", run), "k": k, "similarity": "cosine",
               "fusion": "concatenated L2-normalised features (mean of per-modality cosines)",
               "top1": top1, **ev.class_report(overall, frozen.y_val, frozen.y_train, frozen.num_class),
               "encoder_unchanged": frozen.unchanged()}
    write_json(run / "results.json", results)
    for m, acc in top1.items():
        log(f"knn (k={k}) {m}: val top-1 {100 * acc:.2f} %")
    return results
