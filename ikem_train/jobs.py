"""Every ``ikem-train`` job as one function: the CLI and the demo call these, nothing else.

Each job takes a store, a benchmark, a run folder, a config (a YAML path plus
``section.key=value`` overrides, the file's values over the defaults) and returns a result
dict; ``log`` receives one-line messages. All checks (config, checkpoint kind and
modalities, store/checkpoint agreement, option conflicts) run *before* the run folder is
created, so a refused job writes nothing.

- :func:`pretrain`, :func:`distill`: self-supervised training (:mod:`ikem_train.loop`).
- :func:`linear`, :func:`knn`: frozen-feature evaluation of a checkpoint's encoders (or of
  randomly initialised ones, the no-pretraining baseline).
- :func:`finetune`: encoders and classifiers trained end to end on labels: fine-tuning,
  semi-supervised (a labelled fraction) or supervised from scratch.

Every run folder gets ``config.yaml``; evaluation runs also ``results.json``.

Under torchrun (``torchrun ... -m ikem_train pretrain ...``) every process calls the same
job: the training jobs (pretrain, distill, finetune) run on all of them through
:mod:`ikem_train.distributed`, with rank 0 the one writer and logger; the frozen-feature
evaluations (linear, knn) run on rank 0 alone and return None on the other ranks at once.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from ikem_data.names import MODALITIES, resolve_modalities
from ikem_train import distributed
from ikem_train import evaluation as ev
from ikem_train.checkpoint import CheckpointError, atomic_file, load_checkpoint, save_checkpoint, seed_everything
from ikem_train.config import Config, config_from_dict, config_to_dict, load_config
from ikem_train.data import ModalityDataset, PretrainDataset
from ikem_train.loop import resolve_device, run_folder, train

# -- shared helpers ---------------------------------------------------------------------


def _resume_base(run_dir, resume: bool) -> dict | None:
    """The checkpoint entries of ``run_dir/last.pt`` when resuming (None otherwise).

    A run interrupted before its first checkpoint has only ``config.yaml``: its config is
    the base (the run starts again; options such as ``--teacher`` must be given again).
    """
    if not resume:
        return None
    path = Path(run_dir) / "last.pt"
    if path.is_file():
        return load_checkpoint(path)
    saved = Path(run_dir) / "config.yaml"
    if saved.is_file():
        return {"config": yaml.safe_load(saved.read_text())}
    raise CheckpointError(f"--resume: {run_dir} holds no run to continue (no last.pt, no config.yaml)")


def _store_params(store_path) -> dict:
    """The store's modality parameters that encoders depend on (recorded in checkpoints)."""
    from ikem_data.store import open_store

    with open_store(store_path, "r") as store:
        params = (store.stage("modalities") or {}).get("params") or {}
    return {key: params[key] for key in ev.STORE_KEYS if key in params}


def _with_store_layout(cfg: Config, store) -> Config:
    """``cfg`` with ``model.layout`` the store's (``None`` in a config means "the store's").

    Raises:
        EvaluationError: the config names another layout than the store records.
    """
    from ikem_data.layouts import store_layout
    from ikem_data.store import open_store

    with open_store(store, "r") as s:
        name = store_layout(s).name
    if cfg.model.layout not in (None, name):
        raise ev.EvaluationError(f"model.layout is {cfg.model.layout!r} but store {store} holds {name!r} skeletons")
    plain = config_to_dict(cfg)
    plain["model"]["layout"] = name
    return config_from_dict(plain)


def _with_model(cfg: Config, model_cfg: dict) -> Config:
    """``cfg`` with its ``model`` section replaced (encoders follow their checkpoint)."""
    plain = config_to_dict(cfg)
    plain["model"] = dict(model_cfg)
    return config_from_dict(plain)


@contextmanager
def _processes(cfg: Config, log):
    """This training job's processes: ``(DistEnv, a log that prints on rank 0 only)``.

    One process without torchrun. The global batch is checked against the number of
    processes before anything starts, so every rank refuses it alike.

    Raises:
        ConfigError: ``data.batch_size`` not divisible by the number of processes;
        DistributedError: see :func:`ikem_train.distributed.session`.
    """
    distributed.local_batch_size(cfg.data.batch_size, distributed.launch_env().world_size)
    with distributed.session(cfg.run.device, cfg.run.backend, cfg.run.dist_timeout) as env:
        yield env, env.main_only(log)


def _write_config(run: Path, cfg: Config) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _write_json(path: Path, data: dict) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(json.dumps(data, indent=2))


def _num_class(cfg: Config, *label_arrays) -> int:
    top = max(int(np.max(a)) for a in label_arrays if len(a)) + 1
    if cfg.data.num_class is not None and top > cfg.data.num_class:
        raise ev.EvaluationError(f"data.num_class={cfg.data.num_class} but the store's labels go up to {top - 1}")
    return cfg.data.num_class or top


def _val_names(store_path, index) -> np.ndarray:
    from ikem_data.store import open_store

    with open_store(store_path, "r") as store:
        names = store.names()
    return np.array([names[int(i)] for i in index])


def _train_split(store, benchmark, cfg: Config, env, **options) -> PretrainDataset:
    """A training job's augmented train split: ``data.shear``, ``data.crop_ratio``, ``data.seed``
    and this rank's augmentation streams; ``options`` (``views``, ``positions``) as PretrainDataset's."""
    return PretrainDataset(store, benchmark, "train", shear=cfg.data.shear, crop_ratio=cfg.data.crop_ratio,
                           seed=cfg.data.seed, rank=env.rank, **options)


# -- self-supervised training -----------------------------------------------------------


def pretrain(store, benchmark, run_dir, *, config=None, overrides=(), resume=False, log=print) -> dict:
    """Pretrain one encoder per modality: SkeletonCLR (one), CrosSCLR or IKEM (several).

    Returns:
        ``{"run", "checkpoint", "last_epoch"}`` (the last epoch's metrics record).

    Raises:
        ConfigError, StoreError, KeyError (unknown benchmark), TrainingError, CheckpointError.
    """
    from ikem_train.model import PretrainModel

    base = _resume_base(run_dir, resume)
    cfg = _with_store_layout(load_config(config, overrides, base["config"] if base else None), store)
    with _processes(cfg, log) as (env, log):
        dataset = _train_split(store, benchmark, cfg, env)
        with run_folder(run_dir, resume, log) as run:
            seed_everything(cfg.data.seed)
            model = PretrainModel(**asdict(cfg.model))
            log(f"pretraining {', '.join(cfg.model.modalities)} on {benchmark} ({len(dataset)} train samples) "
                f"for {cfg.optim.epochs} epochs into {run}" + _on_processes(env))
            record = train(model, dataset, cfg, run, kind="pretrain", modalities=cfg.model.modalities,
                           resume=resume, log=log,
                           extra={"store": str(store), "benchmark": benchmark, "store_params": _store_params(store)})
            return {"run": str(run), "checkpoint": str(run / "last.pt"), "last_epoch": record}


def _on_processes(env) -> str:
    """`` on 4 processes (nccl)`` under torchrun, nothing in one process (for the start line)."""
    return f" on {env.world_size} processes ({env.backend})" if env.enabled else ""


def load_teacher(path) -> dict:
    """Load a six-modality pretrain checkpoint to distil from.

    Raises:
        CheckpointError: missing/unreadable file, not a pretrain checkpoint (a student
            cannot be a teacher), or not all six modalities.
    """
    ck = load_checkpoint(path)
    if ck["kind"] != "pretrain":
        raise CheckpointError(f"{path} is a {ck['kind']!r} checkpoint (a student cannot be a teacher); "
                              "give a six-modality pretrain checkpoint")
    have = list(ck["modalities"])
    if set(have) != set(MODALITIES):
        missing = [m for m in MODALITIES if m not in have]
        raise CheckpointError(f"{path} is a pretrain checkpoint of {', '.join(have)}; distillation needs the six "
                              f"modalities (missing: {', '.join(missing)})")
    return ck


def distill(store, benchmark, run_dir, *, teacher=None, config=None, overrides=(), resume=False, log=print) -> dict:
    """Distil a six-modality teacher into joint/motion/bone students (METHOD.md §7).

    The students' encoders take the teacher's ``model`` settings (widths, graph, bones).

    Args:
        teacher: the teacher checkpoint; with ``resume``, defaults to the one recorded.

    Raises:
        as :func:`pretrain`; EvaluationError: the store does not match the teacher.
    """
    from ikem_train.model import DistillModel

    base = _resume_base(run_dir, resume)
    if teacher is None:
        if base is None:
            raise CheckpointError("--teacher is required (a six-modality pretrain checkpoint)")
        teacher = base.get("teacher")
    tck = load_teacher(teacher)
    store_params = ev.check_store_agrees(store, tck["config"]["model"], tck.get("store_params"))
    cfg = _with_model(load_config(config, overrides, base["config"] if base else None), tck["config"]["model"])
    with _processes(cfg, log) as (env, log):
        dataset = _train_split(store, benchmark, cfg, env)
        with run_folder(run_dir, resume, log) as run:
            seed_everything(cfg.data.seed)
            model = DistillModel(tck["model"], tck["config"]["model"], **asdict(cfg.distill))
            log(f"distilling {teacher} into {', '.join(cfg.distill.student_modalities)} on {benchmark} "
                f"({len(dataset)} train samples) for {cfg.optim.epochs} epochs into {run}" + _on_processes(env))
            record = train(model, dataset, cfg, run, kind="distill", modalities=cfg.distill.student_modalities,
                           resume=resume, log=log,
                           extra={"teacher": str(teacher), "store": str(store), "benchmark": benchmark,
                                  "store_params": store_params})
            return {"run": str(run), "checkpoint": str(run / "last.pt"), "last_epoch": record}


# -- frozen-feature evaluation ----------------------------------------------------------


def _source(cfg: Config, store, checkpoint, modalities):
    """Where a job's encoders come from: ``(checkpoint entries or None, modality names, model config dict)``.

    A checkpoint (pretrain, distill or finetune) gives the ``modalities`` asked for (None or
    ``"all"``: all of its encoders) and its ``model`` section; without one, the random
    encoders take ``modalities`` (default ``model.modalities``) and the config's ``model``
    section on the store's layout.

    Raises:
        CheckpointError: see :func:`load_checkpoint`; EvaluationError: a modality the
            checkpoint lacks, a ``model.layout`` other than the store's.
    """
    if checkpoint is not None:
        ck = load_checkpoint(checkpoint, kind=ev.CHECKPOINT_KINDS)
        return ck, ev.checkpoint_modalities(ck, modalities), ck["config"]["model"]
    names = resolve_modalities(cfg.model.modalities if modalities in (None, "all") else modalities)
    return None, names, config_to_dict(_with_store_layout(cfg, store))["model"]


def _encoders(cfg: Config, store, checkpoint, random_init: bool, modalities):
    """(encoders, names, model config dict, trained-on store params, source entries)."""
    if checkpoint is not None and random_init:
        raise ev.EvaluationError("give --checkpoint or --random-init, not both")
    if checkpoint is None and not random_init:
        raise ev.EvaluationError("give --checkpoint (a pretrain, distill or finetune checkpoint) or --random-init")
    ck, names, model_cfg = _source(cfg, store, checkpoint, modalities)
    if ck is None:
        return (ev.random_encoders(model_cfg, names, cfg.data.seed), names, model_cfg, None,
                {"checkpoint": None, "checkpoint_kind": None, "random_init": True})
    return (ev.load_encoders(ck, names), names, model_cfg, ck.get("store_params"),
            {"checkpoint": str(checkpoint), "checkpoint_kind": ck["kind"], "random_init": False})


class FrozenFeatures:
    """Features of the train and val splits from frozen encoders, with their checks
    (also used by :mod:`ikem_train.embed`).

    Construction loads the encoders (:func:`_source`), checks the store against them and
    opens both splits; :meth:`extract` then sets ``x_train``, ``x_val`` (n, K, hidden_dim)
    float32, ``y_train``, ``y_val``, ``i_val`` (n,) int64, ``val_names`` and ``health``.

    Raises:
        EvaluationError: both or neither of ``checkpoint`` and ``random_init``, a store that
            does not match the encoders (:func:`ikem_train.evaluation.check_store_agrees`),
            ``data.num_class`` below the labels. CheckpointError, StoreError, KeyError (benchmark).
    """

    def __init__(self, store, benchmark, cfg: Config, checkpoint, random_init, modalities):
        self.encoders, self.names, self.model_cfg, trained_on, self.source = _encoders(
            cfg, store, checkpoint, random_init, modalities)
        self.store_params = ev.check_store_agrees(store, self.model_cfg, trained_on)
        self.train_ds = ModalityDataset(store, benchmark, "train", self.names)
        self.val_ds = ModalityDataset(store, benchmark, "val", self.names)
        self.num_class = _num_class(cfg, self.train_ds.labels, self.val_ds.labels)
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
        self.val_names = _val_names(self.store, self.i_val)  # SsssCcccPpppRrrrAaaa, in feature order
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
    frozen = FrozenFeatures(store, benchmark, cfg, checkpoint, random_init, modalities)
    if "knn" in run_dirs and cfg.evaluation.knn_k > len(frozen.train_ds):
        raise ev.EvaluationError(f"--k {cfg.evaluation.knn_k} is larger than the {len(frozen.train_ds)} train "
                                 f"samples of {benchmark}")
    with ExitStack() as held:
        runs = {protocol: held.enter_context(run_folder(folder, False, log, resumable=False))
                for protocol, folder in run_dirs.items()}
        for run in runs.values():
            _write_config(run, cfg)
        frozen.extract(log)
        protocols = {"linear": _linear_protocol, "knn": _knn_protocol}
        return {protocol: protocols[protocol](frozen, cfg, run, log) for protocol, run in runs.items()}


def linear(store, benchmark, run_dir, **options) -> dict:
    """Linear evaluation (METHOD.md §8): frozen encoders, new linear classifiers, val top-1/top-5.

    Options as :func:`frozen_evaluation`. Returns (None on ranks >= 1 under torchrun) the
    dict written to ``results.json``: ``final`` and ``best_on_val`` records of the fused
    classifier (its records also give
    ``top1/<modality>``, each of its heads alone), ``per_modality_top1`` (a classifier
    trained on each modality alone, same settings), per-class accuracy, baselines,
    feature health, ``encoder_unchanged``.
    """
    results = frozen_evaluation(store, benchmark, {"linear": run_dir}, **options)
    return None if results is None else results["linear"]


def knn(store, benchmark, run_dir, **options) -> dict:
    """KNN retrieval: cosine k-NN (k = ``evaluation.knn_k``) of val features among train features.

    Options as :func:`frozen_evaluation`. Returns (None on ranks >= 1 under torchrun) the
    dict written to ``results.json``: ``top1`` {modality..., "fused"} (:func:`ikem_train.knn.fuse_features`), ``k``,
    per-class accuracy of the fused prediction, baselines, feature health.
    """
    results = frozen_evaluation(store, benchmark, {"knn": run_dir}, **options)
    return None if results is None else results["knn"]


def _linear_protocol(frozen: FrozenFeatures, cfg: Config, run: Path, log) -> dict:
    from ikem_train.linear import BEST_LABEL, fit_linear

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
    _write_json(run / "results.json", results)
    return results


def _knn_protocol(frozen: FrozenFeatures, cfg: Config, run: Path, log) -> dict:
    from ikem_train.knn import fuse_features, knn_predict

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
    _write_json(run / "results.json", results)
    for m, acc in top1.items():
        log(f"knn (k={k}) {m}: val top-1 {100 * acc:.2f} %")
    return results


# -- supervised training ----------------------------------------------------------------


def finetune(store, benchmark, run_dir, *, checkpoint=None, from_scratch=False, modalities=None, config=None,
             overrides=(), resume=False, log=print) -> dict:
    """Fine-tune encoders and new classifiers end to end on the train split's labels.

    ``finetune.label_fraction`` (``--label-fraction``) fine-tunes on a seeded per-class
    subset (semi-supervised; the drawn store indices are saved as
    ``labelled_train_indices.npy``); ``from_scratch`` trains randomly initialised
    encoders (the supervised baseline). The schedule is the ``optim`` section; the val
    split is evaluated every ``finetune.eval_interval`` epochs and at the last.

    Under torchrun every rank trains (DDP); rank 0 alone evaluates the val split and
    writes the results.

    Returns:
        the dict written to ``results.json``: ``final`` and ``best_on_val`` (labelled),
        ``per_modality_top1``, per-class accuracy, baselines, ``encoder_changed`` (a
        comparison of the backbone weights before and after); None on ranks >= 1.

    Raises:
        ConfigError, CheckpointError, EvaluationError, StoreError, KeyError, TrainingError;
        ValueError: a label fraction that leaves a class without a sample.
    """
    from ikem_train.finetune import FinetuneModel, label_subset
    from ikem_train.linear import BEST_LABEL
    from ikem_train.model import Encoder
    from ikem_train.stgcn import stgcn_kwargs

    base = _resume_base(run_dir, resume)
    if base is not None and checkpoint is None and not from_scratch:
        checkpoint, from_scratch = base.get("checkpoint"), bool(base.get("from_scratch"))
    if checkpoint is not None and from_scratch:
        raise ev.EvaluationError("--from-scratch trains random encoders: do not give --checkpoint with it")
    if checkpoint is None and not from_scratch:
        raise ev.EvaluationError("give --checkpoint (a pretrain, distill or finetune checkpoint) or --from-scratch")
    cfg = load_config(config, overrides, base["config"] if base else None)
    ck, names, source_model = _source(cfg, store, checkpoint, modalities)
    pretrained = None if ck is None else ev.load_encoders(ck, names)  # strict: each key present, no other
    cfg = _with_model(cfg, source_model)
    model_cfg = config_to_dict(cfg)["model"]
    store_params = ev.check_store_agrees(store, model_cfg, None if ck is None else ck.get("store_params"))
    with _processes(cfg, log) as (env, log):
        train_ds = _train_split(store, benchmark, cfg, env, views=1)
        fraction = cfg.finetune.label_fraction
        if fraction is not None:
            subset = label_subset(train_ds.labels, fraction, cfg.data.seed)
            train_ds = _train_split(store, benchmark, cfg, env, views=1, positions=subset)
        val_ds = ModalityDataset(store, benchmark, "val", names)
        num_class = _num_class(cfg, train_ds.labels, val_ds.labels)
        if len(train_ds) < cfg.data.batch_size:
            raise ev.EvaluationError(f"{len(train_ds)} labelled train samples are fewer than one batch of "
                                     f"{cfg.data.batch_size}; lower data.batch_size")
        with run_folder(run_dir, resume, log) as run:
            labelled = run / "labelled_train_indices.npy"
            if fraction is not None and env.is_main:
                if resume and labelled.is_file() and not np.array_equal(np.load(labelled), train_ds.indices):
                    raise ev.EvaluationError(f"{labelled} differs from the subset this config draws; "
                                             "resume with the same seed")
                np.save(labelled, train_ds.indices)

            torch.manual_seed(cfg.data.seed)
            streams = torch.nn.ModuleDict({m: Encoder(num_class, mlp=False, **stgcn_kwargs(model_cfg)) for m in names})
            if pretrained is not None:
                for m in names:
                    streams[m].backbone.load_state_dict(pretrained[m].state_dict(), strict=True)
            model = FinetuneModel(streams, model_cfg["bone_pairs"], model_cfg["true_timeline"], model_cfg["layout"])
            backbones = torch.nn.ModuleDict({m: streams[m].backbone for m in names})
            start = ev.parameter_snapshot(backbones)
            device = env.device or resolve_device(cfg.run.device)
            latest = {}

            @torch.no_grad()
            def evaluate(epoch, model):
                if epoch % cfg.finetune.eval_interval and epoch != cfg.optim.epochs:
                    return {}
                model.eval()
                per = []
                for x, _, _ in ev.eval_batches(val_ds, cfg.data.eval_batch_size, device, cfg.data.num_workers):
                    per.append(model.logits({m: x[:, k] for k, m in enumerate(names)}).float().cpu())
                per = torch.cat(per, dim=1)  # (K, n_val, C)
                if not bool(torch.isfinite(per).all()):
                    raise ev.EvaluationError(f"fine-tuning diverged by epoch {epoch} (non-finite val logits); "
                                             f"lower optim.lr (now {cfg.optim.lr:g})")
                latest["logits"] = per
                fused = per.mean(0)
                y = torch.from_numpy(val_ds.labels)
                rec = {"val/top1": ev.topk_accuracy(fused, y, 1), "val/top5": ev.topk_accuracy(fused, y, 5),
                       **{f"val/top1/{m}": ev.topk_accuracy(per[k], y, 1) for k, m in enumerate(names)}}
                log(f"finetune epoch {epoch}: val top-1 {100 * rec['val/top1']:.2f} %, "
                    f"top-5 {100 * rec['val/top5']:.2f} %")
                return rec

            what = "from scratch (random encoders)" if from_scratch else f"from {checkpoint}"
            share = f"{len(train_ds)} labelled train samples" + (f" ({fraction:g} per class)" if fraction else "")
            log(f"fine-tuning {', '.join(names)} {what} on {benchmark}, {share}, for {cfg.optim.epochs} epochs "
                f"into {run}" + _on_processes(env))
            train(model, train_ds, cfg, run, kind="finetune", modalities=names, resume=resume, epoch_end=evaluate,
                  log=log, extra={"checkpoint": None if checkpoint is None else str(checkpoint),
                                  "from_scratch": bool(from_scratch), "store": str(store), "benchmark": benchmark,
                                  "store_params": store_params})
            if not env.is_main:  # rank 0 evaluated the val split and writes the results
                return None
            if "logits" not in latest:  # a resumed run that had nothing left to train
                model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
                evaluate(cfg.optim.epochs, model.to(device))
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            evaluated = [r for r in records if "val/top1" in r]
            final, best = evaluated[-1], max(evaluated, key=lambda r: r["val/top1"])

            def keep(record):  # {"epoch", "top1", "top5", "top1/<m>"} from a metrics record's val/ entries
                return {"epoch": record["epoch"], **{k[4:]: v for k, v in record.items() if k.startswith("val/")}}

            fused = latest["logits"].mean(0)
            changed = bool(ev.changed_parameters(start, backbones))
            results = {
                "job": "finetune", "checkpoint": None if checkpoint is None else str(checkpoint),
                "from_scratch": bool(from_scratch), "store": str(store), "benchmark": benchmark,
                "modalities": list(names),
                "fused": len(names) > 1, "num_class": num_class, "graph_partition": model_cfg.get("graph_partition"),
                "store_params": store_params, "label_fraction": fraction, "train_samples": len(train_ds),
                "val_samples": len(val_ds), "run": str(run),
                "final": keep(final), "best_on_val": {"note": BEST_LABEL, **keep(best)},
                "per_modality_top1": {m: final[f"val/top1/{m}"] for m in names},
                **ev.class_report(fused.argmax(1), torch.from_numpy(val_ds.labels), train_ds.labels, num_class),
                "encoder_changed": changed,
            }
            _write_json(run / "results.json", results)
            return results
