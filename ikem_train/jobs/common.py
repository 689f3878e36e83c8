"""The helpers every job shares: resuming, the store's layout and parameters, processes, run files.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from ikem_data.names import resolve_modalities
from ikem_train.checkpoint import CheckpointError, atomic_file, load_checkpoint
from ikem_train.config import Config, config_from_dict, config_to_dict, read_yaml
from ikem_train.data.datasets import PretrainDataset
from ikem_train.eval import features as ev
from ikem_train.training import distributed


def resume_base(run_dir, resume: bool) -> dict | None:
    """The checkpoint entries of ``run_dir/last.pt`` when resuming (None otherwise).

    A run interrupted before its first checkpoint has only ``config.yaml``: its config is
    the base (the run starts again; options such as ``--teacher`` must be given again).
    """
    if not resume:
        return None
    path = Path(run_dir) / "last.pt"
    if path.is_file():
        return load_checkpoint(path, resume=True)  # what continuing needs is checked before anything starts
    saved = Path(run_dir) / "config.yaml"
    if saved.is_file():
        return {"config": read_yaml(saved)}  # the config files' strict reading (it is one)
    raise CheckpointError(f"--resume: {run_dir} holds no run to continue (no last.pt, no config.yaml)")


def recorded_store_params(store_path) -> dict:
    """The store's modality parameters that encoders depend on (recorded in checkpoints)."""
    from ikem_data.store import open_store

    with open_store(store_path, "r") as store:
        params = (store.stage("modalities") or {}).get("params") or {}
    return {key: params[key] for key in ev.STORE_KEYS if key in params}


def with_store_layout(cfg: Config, store) -> Config:
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


def umurl_config(cfg, store):
    """``cfg`` with ``umurl.persons`` the store's body slots, after checking the store for UmURL.

    Raises:
        StoreError: the store's ``t_length`` is not ``umurl.t_length`` (UmURL: 64 frames), or
            ``umurl.persons`` is given and is not the store's.
    """
    from ikem_data.store import open_store
    from ikem_train.data.datasets import StoreError, check_store

    with open_store(store, "r") as s:
        check_store(s, ("joint",))
        persons = int(s["modalities/joint"].shape[-1])
    t_length = recorded_store_params(store).get("t_length")
    want = cfg.umurl.t_length
    if t_length != want:
        raise StoreError(f"store {store} holds sequences of t_length={t_length} frames but UmURL takes "
                         f"umurl.t_length={want}: build a store with `ikem-data modalities --from {store} "
                         f"--out NEW --t-length {want}`")
    if cfg.umurl.persons not in (None, persons):
        raise StoreError(f"umurl.persons is {cfg.umurl.persons} but store {store} holds {persons} body slot(s)")
    plain = config_to_dict(cfg)
    plain["umurl"]["persons"] = persons
    return config_from_dict(plain)


def with_model(cfg: Config, model_cfg: dict) -> Config:
    """``cfg`` with its ``model`` section replaced (encoders follow their checkpoint)."""
    plain = config_to_dict(cfg)
    plain["model"] = dict(model_cfg)
    return config_from_dict(plain)


@contextmanager
def job_processes(cfg: Config, log):
    """This training job's processes: ``(DistEnv, a log that prints on rank 0 only)``.

    One process without torchrun. The global batch is checked against the number of
    processes before anything starts, so every rank refuses it alike.

    Raises:
        ConfigError: ``data.batch_size`` not divisible by the number of processes;
        DistributedError: see :func:`ikem_train.training.distributed.session`.
    """
    distributed.local_batch_size(cfg.data.batch_size, distributed.launch_env().world_size)
    with distributed.session(cfg.run.device, cfg.run.backend, cfg.run.dist_timeout) as env:
        yield env, env.main_only(log)


@contextmanager
def reading_store(store, base=None, run_dir=None):
    """A job's hold on its store (:func:`ikem_data.store.reading`): writers are refused while
    it runs, and a resumed run's store must be the one it was made from.

    Args:
        base: the checkpoint entries of a resumed run (:func:`resume_base`), or None.

    Yields:
        the :class:`ikem_data.store.StoreWatch`: record its ``fingerprint`` in checkpoints
        and results, call ``verify()`` before writing them at the end.

    Raises:
        StoreError: the store changed since the resumed run recorded it (its checkpoints
            and metrics belong to the old content); LockedError: a process writes it.
    """
    from ikem_data.store import StoreError, reading

    with reading(store) as watch:
        recorded = (base or {}).get("store_fingerprint")
        if recorded is not None and recorded != watch.fingerprint:
            raise StoreError(f"store {store} changed since run {run_dir} was made from it (fingerprint {recorded} -> "
                             f"{watch.fingerprint}): its checkpoints and metrics belong to the old content, so "
                             "--resume would mix the two; start a new run in a new --run-dir")
        yield watch


def write_config(run: Path, cfg: Config) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def write_json(path: Path, data: dict) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(json.dumps(data, indent=2))


def count_classes(cfg: Config, *label_arrays) -> int:
    top = max(int(np.max(a)) for a in label_arrays if len(a)) + 1
    if cfg.data.num_class is not None and top > cfg.data.num_class:
        raise ev.EvaluationError(f"data.num_class={cfg.data.num_class} but the store's labels go up to {top - 1}")
    return cfg.data.num_class or top


def read_val_names(store_path, index) -> np.ndarray:
    from ikem_data.store import open_store

    with open_store(store_path, "r") as store:
        names = store.names()
    return np.array([names[int(i)] for i in index])


def train_split(store, benchmark, cfg: Config, env, **options) -> PretrainDataset:
    """A training job's augmented train split: ``data.shear``, ``data.crop_ratio``, ``data.seed``
    and this rank's augmentation streams; ``options`` (``views``, ``positions``) as PretrainDataset's."""
    return PretrainDataset(store, benchmark, "train", shear=cfg.data.shear, crop_ratio=cfg.data.crop_ratio,
                           seed=cfg.data.seed, rank=env.rank, **options)

def on_processes(env) -> str:
    """`` on 4 processes (nccl)`` under torchrun, nothing in one process (for the start line)."""
    return f" on {env.world_size} processes ({env.backend})" if env.enabled else ""


def encoder_source(cfg: Config, store, checkpoint, modalities):
    """Where a job's encoders come from: ``(checkpoint entries or None, modality names, model config dict)``.

    A checkpoint (pretrain, distill or finetune) gives the ``modalities`` asked for (None or
    ``"all"``: all of its encoders) and its ``model`` section; without one, the random
    encoders take ``modalities`` (default ``model.modalities``) and the config's ``model``
    section on the store's layout. UmURL (``model.method: umurl``, in the checkpoint or the
    config) gives features (:func:`ikem_train.eval.features.umurl_features`: default the
    fused ``multimodal`` one) and its model section carries the ``umurl`` section under ``"umurl"``.

    Raises:
        CheckpointError: see :func:`load_checkpoint`; EvaluationError: a modality the
            checkpoint lacks, a ``model.layout`` other than the store's.
    """
    if checkpoint is not None:
        ck = load_checkpoint(checkpoint, kind=ev.CHECKPOINT_KINDS)
        model_cfg = ck["config"]["model"]
        if ev.is_umurl(model_cfg):  # the umurl section travels with the model section
            model_cfg = {**model_cfg, "umurl": ck["config"]["umurl"]}
        return ck, ev.checkpoint_modalities(ck, modalities), model_cfg
    if cfg.model.method == "umurl":
        plain = config_to_dict(umurl_config(with_store_layout(cfg, store), store))
        return None, ev.umurl_features(modalities), {**plain["model"], "umurl": plain["umurl"]}
    names = resolve_modalities(cfg.model.modalities if modalities in (None, "all") else modalities)
    return None, names, config_to_dict(with_store_layout(cfg, store))["model"]
