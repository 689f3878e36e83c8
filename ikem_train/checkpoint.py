"""Checkpoints: atomic writes, every RNG state, clear errors on load (DESIGN.md §5, §6).

A checkpoint is a dict::

    {"model": state_dict of the uncompiled module (queues included as buffers),
     "optimizer": ..., "scheduler": {...}, "epoch": last finished epoch (1-based),
     "step": global step, "rng": rng_state(), "config": run config as plain dicts,
     "kind": "pretrain" | "distill" | "finetune" | "linear" | "knn", "modalities": [...],
     "world_size": processes that trained it (absent: 1),
     "rng_ranks": [rng_state() of rank 0, 1, ...] (torchrun runs; "rng" is rank 0's), ...}

Writes go to ``<name>.tmp`` in the same folder, are flushed and fsync'ed, then renamed
over the target with ``os.replace``: a crash leaves the previous file intact.
"""

from __future__ import annotations

import math
import os
import pickle
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ikem_data.files import kind_of
from ikem_data.layouts import DEFAULT_LAYOUT
from ikem_data.quoting import quote
from ikem_train.config import ConfigError, config_from_dict
from ikem_train.config_strict import FLOAT32_MAX
from ikem_train.nets.graph import LEGACY_GRAPH_PARTITION

KINDS = ("pretrain", "distill", "linear", "finetune", "knn")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind; the message says which."""


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG state a run depends on: python, numpy (global), torch CPU/CUDA, loader shuffle.

    Only tensors, tuples, dicts and scalars, so that checkpoints load with
    ``torch.load(weights_only=True)``: numpy's MT19937 key is kept as an int64 tensor.
    """
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_to_python_state(state["python"]))
    saved = state["numpy"]
    if isinstance(saved, dict):
        saved = (saved["kind"], saved["key"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                 saved["cached_gaussian"])
    np.random.set_state(saved)  # a tuple holding an ndarray in checkpoints from before this format
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"].cpu())


def _to_python_state(value):
    # pickling may turn the inner tuple into a list; random.setstate wants tuples
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    return core.multiarray._reconstruct


# Checkpoints written before RNG states were stored as tensors hold numpy's MT19937 key as
# an ndarray. These globals rebuild a plain array and nothing else (under both the numpy 1
# and numpy 2 module names); every other global is refused by ``weights_only=True``.
_OLD_NUMPY_RNG_GLOBALS = [(_numpy_reconstruct(), "numpy.core.multiarray._reconstruct"),
                          (_numpy_reconstruct(), "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype,
                          type(np.dtype(np.uint32))]


def _unsafe_globals(path) -> list[str]:
    """The globals of ``path``'s pickle that a safe load refuses (empty when it cannot tell)."""
    allowed = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
               "numpy.dtype", f"numpy.dtypes.{type(np.dtype(np.uint32)).__name__}"}
    try:
        return [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name not in allowed]
    except Exception:
        return []


@contextmanager
def atomic_file(path, mode: str = "wb"):
    """Write ``path`` all at once: yields ``<name>.tmp`` beside it, open in ``mode``; on a
    clean exit it is flushed, fsync'ed and renamed over ``path`` (``os.replace``), so a
    reader or a crash sees the old file or the new one, never part of one. On an error
    the tmp file is removed and ``path`` is left as it was; a full disk (ENOSPC) or the
    file-size limit (EFBIG) raises :class:`ikem_data.files.NoRoomError`, one line saying so."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk or the file-size limit: one line, the old file is kept
        from ikem_data.files import is_no_room, no_room

        if not is_no_room(exc):
            raise
        kept = (f"{path.name} is left as it was, the run stays resumable from its last checkpoint"
                if path.suffix == ".pt" else f"{path.name} is left as it was")
        raise no_room(exc, path, "checkpoint" if path.suffix == ".pt" else "file", kept,
                      rerun="rerun the same command with --resume") from None
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_file`), creating its folder.

    Raises:
        CheckpointError: ``payload["kind"]`` is not one of :data:`KINDS`.
    """
    if payload.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint kind must be one of {KINDS}, got {payload.get('kind')!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(path, kind=None, map_location="cpu", resume=False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    A pretrain, distill or finetune checkpoint written before ``model.graph_partition`` existed
    gets ``config.model.graph_partition = "full"``: the graph it was trained with; one
    without ``model.layout`` gets the Kinect v2 layout, the only one there was.

    Args:
        path: file. kind: expected kind or tuple of kinds (None: any).
        resume: also check what continuing a run reads (optimizer, RNG states).

    The file is read with ``torch.load(weights_only=True)``: tensors, containers and
    scalars only, so a file whose pickle carries code is refused, never run.

    Raises:
        CheckpointError: missing or unreadable file, a file a safe load refuses, not an
            ikem checkpoint, wrong kind, an entry of the wrong type or out of range
            (:func:`entry_problem`; one line naming the file and the entry).
    """
    path = Path(path)
    if not path.is_file():
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        raise CheckpointError(f"checkpoint {path} is {kind_of(path.stat().st_mode)}; give a .pt file ikem wrote")
    try:
        with torch.serialization.safe_globals(_OLD_NUMPY_RNG_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, a pickle that is not plain data
        unsafe = _unsafe_globals(path) if isinstance(exc, pickle.UnpicklingError) else []
        if unsafe:
            raise CheckpointError(
                f"refused to load {path}: it holds objects a safe load does not allow ({', '.join(unsafe)}); "
                "a file like this can run code when loaded, so ikem never loads it. Use checkpoints written by ikem"
            ) from None
        # (torch's own text for a refused unpickle advises an unsafe load: never shown)
        detail = "" if isinstance(exc, pickle.UnpicklingError) else f" ({type(exc).__name__}: {exc})"
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch checkpoint, or a truncated one{detail}"
                              ) from None
    if not isinstance(payload, dict) or "model" not in payload or payload.get("kind") not in KINDS:
        raise CheckpointError(f"{path} is not an ikem checkpoint (no 'model'/'kind' entries)")
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if payload["kind"] not in kinds:
            raise CheckpointError(
                f"{path} is a {payload['kind']!r} checkpoint; this command needs {' or '.join(map(repr, kinds))}"
            )
    config = payload.get("config")
    model_cfg = config.get("model") if isinstance(config, dict) else None  # entry_problem names a non-mapping
    if payload["kind"] in ("pretrain", "distill", "finetune") and isinstance(model_cfg, dict):
        model_cfg.setdefault("graph_partition", LEGACY_GRAPH_PARTITION)
        model_cfg.setdefault("layout", DEFAULT_LAYOUT)  # every checkpoint before layouts were recorded
        model_cfg.setdefault("method", "ikem")  # every checkpoint before UmURL
    problem = entry_problem(payload, resume)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}; it was edited or damaged: use a checkpoint as ikem "
                              "wrote it")
    return payload


def _count_problem(name, value, least=0):
    if isinstance(value, int) and not isinstance(value, bool) and value >= least:
        return None
    return f"entry {name!r} must be an integer >= {least}, not {quote(value)} ({type(value).__name__})"


def entry_problem(payload: dict, resume: bool = False) -> str | None:
    """What is wrong with a loaded checkpoint's entries (None: nothing), checked before any is used.

    Every checkpoint: ``epoch`` and ``step`` integers >= 0, ``world_size`` >= 1 (when
    present), ``modalities`` a list of names, ``config`` a valid run config (the same
    validation as config files and ``--set``: :func:`ikem_train.config.config_from_dict`),
    required for the kinds that train encoders. With ``resume``, also what continuing needs:
    ``epoch``, ``step``, ``optimizer`` with finite numbers in its parameter groups (the
    learning rate above all), and the RNG states (``rng``, and ``rng_ranks`` of a torchrun run).
    """
    required = ("epoch", "step") if resume else ()
    for name in ("epoch", "step"):
        if name in payload or name in required:
            problem = _count_problem(name, payload.get(name))
            if problem:
                return problem
    if "world_size" in payload:
        problem = _count_problem("world_size", payload["world_size"], 1)
        if problem:
            return problem
    modalities = payload.get("modalities", [])
    if not isinstance(modalities, (list, tuple)) or not all(isinstance(m, str) for m in modalities):
        return f"entry 'modalities' must be a list of modality names, not {quote(modalities)}"
    config = payload.get("config")
    if config is not None or payload["kind"] in ("pretrain", "distill", "finetune"):
        if not isinstance(config, dict):
            return f"entry 'config' must be a mapping of config sections, not {quote(config)}"
        try:
            config_from_dict(config)
        except ConfigError as exc:
            return f"entry 'config': {exc}"
    if not resume:
        return None
    optimizer = payload.get("optimizer")
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return "entry 'optimizer' must be an optimizer state with a list of param_groups"
    for i, group in enumerate(groups):
        for key, value in group.items():
            if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                return f"entry 'optimizer': param_groups[{i}].{key} is {quote(value)}, not a finite float32 number"
    world = payload.get("world_size", 1)
    states = payload.get("rng_ranks") if world > 1 else [payload.get("rng")]
    name = "rng_ranks" if world > 1 else "rng"
    if not isinstance(states, list) or len(states) != world:
        return f"entry {name!r} must hold the random states of {world} process(es), not {quote(states)}"
    for state in states:
        if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
            return (f"entry {name!r} must hold python, numpy and torch random states "
                    f"(got {quote(sorted(state) if isinstance(state, dict) else state)})")
    return None
