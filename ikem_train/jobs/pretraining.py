"""Self-supervised training jobs: :func:`pretrain` (SkeletonCLR, CrosSCLR, IKEM; UmURL with
``model.method: umurl``) and :func:`distill` (teacher 6 -> student 3), both through
:func:`ikem_train.training.loop.train`.
"""

from __future__ import annotations

from dataclasses import asdict

from ikem_data.names import MODALITIES
from ikem_train.checkpoint import CheckpointError, load_checkpoint, seed_everything
from ikem_train.config import config_to_dict, load_config
from ikem_train.eval import features as ev
from ikem_train.jobs.common import (job_processes, on_processes, reading_store, recorded_store_params, resume_base,
                                    train_split, umurl_config, with_model, with_store_layout)
from ikem_train.training.loop import run_folder, train


def pretrain(store, benchmark, run_dir, *, config=None, overrides=(), resume=False, log=print) -> dict:
    """Pretrain one encoder per modality: SkeletonCLR (one), CrosSCLR or IKEM (several); or, with
    ``model.method: umurl``, UmURL's one early-fusion encoder of joint, bone and motion
    (:func:`umurl_config`; ``model.modalities`` is then unused).

    Returns:
        ``{"run", "checkpoint", "last_epoch"}`` (the last epoch's metrics record).

    Raises:
        ConfigError, StoreError (also: a UmURL run on a store of another ``t_length``),
        KeyError (unknown benchmark), TrainingError, CheckpointError.
    """
    from ikem_train.methods.model import PretrainModel

    base = resume_base(run_dir, resume)
    cfg = with_store_layout(load_config(config, overrides, base["config"] if base else None), store)
    if cfg.model.method == "umurl":
        return _pretrain_umurl(store, benchmark, run_dir, cfg, base, resume, log)
    with reading_store(store, base, run_dir) as watch, job_processes(cfg, log) as (env, log):
        dataset = train_split(store, benchmark, cfg, env)
        with run_folder(run_dir, resume, log) as run:
            seed_everything(cfg.data.seed)
            model = PretrainModel(**asdict(cfg.model))
            log(f"pretraining {', '.join(cfg.model.modalities)} on {benchmark} ({len(dataset)} train samples) "
                f"for {cfg.optim.epochs} epochs into {run}" + on_processes(env))
            record = train(model, dataset, cfg, run, kind="pretrain", modalities=cfg.model.modalities,
                           resume=resume, log=log,
                           extra={"store": str(store), "benchmark": benchmark, "store_params": recorded_store_params(store),
                                  "store_fingerprint": watch.fingerprint})
            watch.verify()
            return {"run": str(run), "checkpoint": str(run / "last.pt"), "last_epoch": record}


def _pretrain_umurl(store, benchmark, run_dir, cfg, base, resume, log) -> dict:
    from ikem_train.methods.umurl import UmURLDataset, UmURLModel
    from ikem_train.nets.umurl import UMURL_MODALITIES, backbone_kwargs

    cfg = umurl_config(cfg, store)
    plain = config_to_dict(cfg)
    u = cfg.umurl
    with reading_store(store, base, run_dir) as watch, job_processes(cfg, log) as (env, log):
        dataset = UmURLDataset(store, benchmark, u, "train", seed=cfg.data.seed, rank=env.rank)
        with run_folder(run_dir, resume, log) as run:
            seed_everything(cfg.data.seed)
            model = UmURLModel(backbone_kwargs(plain["model"], plain["umurl"]), projector_dim=u.projector_dim,
                               consistency_weight=u.consistency_weight, variance_weight=u.variance_weight,
                               covariance_weight=u.covariance_weight, variance_eps=u.variance_eps)
            log(f"pretraining UmURL (joint, bone, motion, one early-fusion encoder) on {benchmark} "
                f"({len(dataset)} train samples) for {cfg.optim.epochs} epochs into {run}" + on_processes(env))
            record = train(model, dataset, cfg, run, kind="pretrain", modalities=UMURL_MODALITIES,
                           resume=resume, log=log,
                           extra={"store": str(store), "benchmark": benchmark, "store_params": recorded_store_params(store),
                                  "store_fingerprint": watch.fingerprint})
            watch.verify()
            return {"run": str(run), "checkpoint": str(run / "last.pt"), "last_epoch": record}


def load_teacher(path) -> dict:
    """Load a six-modality pretrain checkpoint to distil from.

    Raises:
        CheckpointError: missing/unreadable file, not a pretrain checkpoint (a student
            cannot be a teacher), or not all six modalities.
    """
    ck = load_checkpoint(path)
    if ck["config"]["model"].get("method") == "umurl":
        raise CheckpointError(f"{path} is a UmURL checkpoint: distillation needs a six-modality IKEM teacher "
                              "(evaluate UmURL with linear, knn, finetune or embed)")
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
    from ikem_train.methods.model import DistillModel

    base = resume_base(run_dir, resume)
    if teacher is None:
        if base is None:
            raise CheckpointError("--teacher is required (a six-modality pretrain checkpoint)")
        teacher = base.get("teacher")
    tck = load_teacher(teacher)
    store_params = ev.check_store_agrees(store, tck["config"]["model"], tck.get("store_params"))
    cfg = with_model(load_config(config, overrides, base["config"] if base else None), tck["config"]["model"])
    with reading_store(store, base, run_dir) as watch, job_processes(cfg, log) as (env, log):
        dataset = train_split(store, benchmark, cfg, env)
        with run_folder(run_dir, resume, log) as run:
            seed_everything(cfg.data.seed)
            model = DistillModel(tck["model"], tck["config"]["model"], **asdict(cfg.distill))
            log(f"distilling {teacher} into {', '.join(cfg.distill.student_modalities)} on {benchmark} "
                f"({len(dataset)} train samples) for {cfg.optim.epochs} epochs into {run}" + on_processes(env))
            record = train(model, dataset, cfg, run, kind="distill", modalities=cfg.distill.student_modalities,
                           resume=resume, log=log,
                           extra={"teacher": str(teacher), "store": str(store), "benchmark": benchmark,
                                  "store_params": store_params, "store_fingerprint": watch.fingerprint})
            watch.verify()
            return {"run": str(run), "checkpoint": str(run / "last.pt"), "last_epoch": record}
