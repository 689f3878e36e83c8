"""Checkpoints: atomic writes, every RNG state, clear errors on load (DESIGN.md §5, §6).

A checkpoint is a dict::

    {"model": state_dict of the uncompiled module (queues included as buffers),
     "optimizer": ..., "scheduler": {...}, "epoch": last finished epoch (1-based),
     "step": global step, "rng": rng_state(), "config": run config as plain dicts,
     "kind": "pretrain" | "distill" | "finetune" | "linear" | "knn", "modalities": [...], ...}

Writes go to ``<name>.tmp`` in the same folder, are flushed and fsync'ed, then renamed
over the target with ``os.replace``: a crash leaves the previous file intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ikem_train.graph import LEGACY_GRAPH_PARTITION

KINDS = ("pretrain", "distill", "linear", "finetune", "knn")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind; the message says which."""


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG state a run depends on: python, numpy (global), torch CPU/CUDA, loader shuffle."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_to_python_state(state["python"]))
    np.random.set_state(state["numpy"])
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


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (tmp file, fsync, ``os.replace``).

    Raises:
        CheckpointError: ``payload["kind"]`` is not one of :data:`KINDS`.
    """
    if payload.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint kind must be one of {KINDS}, got {payload.get('kind')!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path, kind=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    A pretrain, distill or finetune checkpoint written before ``model.graph_partition`` existed
    gets ``config.model.graph_partition = "full"``: the graph it was trained with.

    Args:
        path: file. kind: expected kind or tuple of kinds (None: any).

    Raises:
        CheckpointError: missing or unreadable file, not an ikem checkpoint, wrong kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # Our checkpoints hold numpy RNG state and python tuples besides tensors.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or "model" not in payload or payload.get("kind") not in KINDS:
        raise CheckpointError(f"{path} is not an ikem checkpoint (no 'model'/'kind' entries)")
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if payload["kind"] not in kinds:
            raise CheckpointError(
                f"{path} is a {payload['kind']!r} checkpoint; this command needs {' or '.join(map(repr, kinds))}"
            )
    model_cfg = (payload.get("config") or {}).get("model")
    if payload["kind"] in ("pretrain", "distill", "finetune") and isinstance(model_cfg, dict):
        model_cfg.setdefault("graph_partition", LEGACY_GRAPH_PARTITION)
    return payload
