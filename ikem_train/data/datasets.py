"""Datasets over an ikem store, streamed batch by batch (DESIGN.md §3, METHOD.md §4, §8).

Both datasets are *batch* datasets: ``dataset[(epoch, positions)]`` returns a whole batch,
read from the store in contiguous runs (one read per chunk run, not per sample). Use
:func:`make_loader`, which pairs them with :class:`EpochBatchSampler`.

The store is opened lazily in the process that reads (each DataLoader worker opens its
own handle; h5py/zarr handles never cross a fork or spawn). Per-worker augmentation
streams come from ``worker_rng(seed, epoch, worker, rank)``; the epoch travels with each
batch request, so persistent workers see the right epoch too.

Under torchrun every rank shuffles with the same generator (same seed, same checkpointed
state), so all ranks agree on the global order of an epoch; rank r takes the r-th slice
of each global batch (:class:`EpochBatchSampler`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from ikem_data.store import open_store
from ikem_train.data.augment import augment, worker_rng


class StoreError(ValueError):
    """The store lacks what a command needs; the message says what to run."""


def check_store(store, modalities=("joint",), benchmark=None):
    """Check that ``store`` has ``modalities/<name>`` for each name (and the benchmark), and
    that its content is consistent (:meth:`ikem_data.store.Store.problems`).

    Raises:
        StoreError: missing modalities (names ``ikem-data modalities``) or raw data, or
            inconsistent content (listed).
        KeyError: the store lacks ``benchmark``; the message lists the ones it has.
    """
    for name in ("raw/frames", "raw/label"):
        if name not in store:
            raise StoreError(f"store {store.path} has no {name}; build it with `ikem-data gendata` first")
    missing = [m for m in modalities if f"modalities/{m}" not in store]
    if missing or not store.is_complete("modalities"):
        what = (f"has no {', '.join(f'modalities/{m}' for m in missing)}" if missing
                else "has an unfinished modalities stage")
        raise StoreError(f"store {store.path} {what}; run `ikem-data modalities --out {store.path}` first")
    if benchmark is not None:
        store.split(benchmark, "train")
    problems = store.problems(benchmark, modalities)
    if problems:
        raise StoreError(f"store {store.path} is damaged or was edited by hand: {'; '.join(problems)}. "
                         "Rebuild it with `ikem-data gendata` and `ikem-data modalities`")


def read_rows(array, rows) -> np.ndarray:
    """``array[rows]`` for sorted, unique int rows, read as contiguous runs of slices."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0,) + tuple(array.shape[1:]), dtype=array.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    parts = []
    for run in np.split(rows, breaks):
        parts.append(np.asarray(array[int(run[0]) : int(run[-1]) + 1]))
    return np.concatenate(parts, axis=0)


class _StoreBatches:
    """Shared part: the split's indices, labels and frame counts, lazy store handle."""

    def __init__(self, store_path, benchmark, part, modalities, positions=None):
        self.store_path = str(store_path)
        self.benchmark = benchmark
        self.part = part
        self.modalities = tuple(modalities)
        with open_store(self.store_path, "r") as store:
            check_store(store, self.modalities, benchmark)
            self.indices = store.split(benchmark, part)
            frames = np.asarray(store["raw/frames"][...])
            labels = np.asarray(store["raw/label"][...])
        if positions is not None:  # a subset of the split, e.g. the labelled samples
            self.indices = self.indices[np.asarray(positions, dtype=np.int64)]
        self.frames = frames[self.indices].astype(np.float32)
        self.labels = labels[self.indices].astype(np.int64)
        self._store = None

    def __len__(self):
        return len(self.indices)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None  # never pickle an open handle
        return state

    def _read(self, name, positions):
        """Rows of ``modalities/<name>`` for split positions, in the order given."""
        if self._store is None:
            self._store = open_store(self.store_path, "r")
        store_idx = self.indices[positions]
        order = np.argsort(store_idx, kind="stable")
        data = read_rows(self._store[f"modalities/{name}"], store_idx[order])
        out = np.empty_like(data)
        out[order] = data
        return out


class PretrainDataset(_StoreBatches):
    """Two augmented views of the preprocessed joint sequence (METHOD.md §4).

    Args:
        store_path: ikem store with ``modalities/joint``.
        benchmark, part: split to read (``"train"`` for pretraining).
        shear: shear amplitude (negative disables). crop_ratio: temporal padding ratio.
        seed: base seed of the per-worker augmentation streams.
        views: 2 (pretraining: query and key views) or 1 (fine-tuning: ``view1`` only).
        positions: optional positions into the split (a labelled subset); None: all.
        rank: this process's rank under torchrun (0 otherwise): part of the augmentation
            streams' seed, so ranks never draw the same augmentations.

    Item ``(epoch, positions)`` gives a dict: ``view1`` (and ``view2``) (B, 3, T, 25, M)
    float32 tensors, ``frames`` (B,) float32 header frame counts, ``label`` (B,) int64,
    ``index`` (B,) int64 store indices.

    Raises:
        StoreError, KeyError: see :func:`check_store` and ``Store.split``.
    """

    def __init__(self, store_path, benchmark, part="train", shear=0.5, crop_ratio=6, seed=0, views=2,
                 positions=None, rank=0):
        super().__init__(store_path, benchmark, part, ("joint",), positions)
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        self.views = views
        self.shear = shear
        self.crop_ratio = crop_ratio
        self.seed = seed
        self.rank = int(rank)
        self._rng_key = None
        self._rng = None

    def rng(self, epoch):
        """This process's augmentation stream for ``epoch`` (reset when the epoch changes)."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if self._rng_key != (epoch, worker):
            self._rng_key = (epoch, worker)
            self._rng = worker_rng(self.seed, epoch, worker, self.rank)
        return self._rng

    def __getstate__(self):
        state = super().__getstate__()
        state["_rng_key"] = state["_rng"] = None
        return state

    def __getitem__(self, item):
        epoch, positions = item
        positions = np.asarray(positions, dtype=np.int64)
        joint = self._read("joint", positions)
        rng = self.rng(epoch)
        out = {
            "frames": torch.from_numpy(self.frames[positions]),
            "label": torch.from_numpy(self.labels[positions]),
            "index": torch.from_numpy(self.indices[positions]),
        }
        for view in range(1, self.views + 1):
            out[f"view{view}"] = torch.from_numpy(np.stack([augment(x, rng, self.shear, self.crop_ratio) for x in joint]))
        return out


class ModalityDataset(_StoreBatches):
    """Cached modalities for linear evaluation, no augmentation (METHOD.md §8).

    Item ``(epoch, positions)`` gives ``x`` (B, K, 3, T, 25, M) float32 (K = number of
    modalities, in the order given), ``label`` (B,) int64, ``index`` (B,) int64.
    """

    def __getitem__(self, item):
        _, positions = item
        positions = np.asarray(positions, dtype=np.int64)
        x = np.stack([self._read(m, positions) for m in self.modalities], axis=1)
        return {
            "x": torch.from_numpy(x),
            "label": torch.from_numpy(self.labels[positions]),
            "index": torch.from_numpy(self.indices[positions]),
        }


class EpochBatchSampler:
    """Yields ``(epoch, positions)`` batches; the shuffle uses its own torch Generator.

    The epoch's order is a function of the generator's state alone (seeded by
    ``data.seed``, checkpointed), so every rank of a torchrun job draws the same global
    order; rank r yields positions ``[r·b, (r+1)·b)`` of each global batch, b =
    batch_size / world_size. Concatenated in rank order, the ranks' batches are the
    batch one process would read.

    Args:
        n: dataset length. batch_size: the global batch size. shuffle: random order per epoch.
        drop_last: drop the last partial batch (training: always, METHOD.md §11 item 18).
        generator: ``torch.Generator`` whose state is checkpointed for exact resume.
        max_batches: stop an epoch after this many batches (quick runs); None: all.
        rank, world_size: this process's share (0 and 1 in one process).

    Raises:
        ValueError: ``batch_size`` not divisible by ``world_size``, or several processes
            without ``drop_last`` (a partial batch cannot be split evenly).
    """

    def __init__(self, n, batch_size, shuffle, drop_last, generator=None, max_batches=None, rank=0, world_size=1):
        if batch_size % world_size:
            raise ValueError(f"the global batch {batch_size} is not divisible by the {world_size} processes")
        if world_size > 1 and not drop_last:
            raise ValueError("several processes need drop_last: a partial batch cannot be split evenly")
        self.n = n
        self.max_batches = max_batches
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else torch.Generator()
        self.rank, self.world_size = rank, world_size
        self.epoch = 1

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        full = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        return full if self.max_batches is None else min(full, self.max_batches)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).numpy() if self.shuffle else np.arange(self.n)
        share = self.batch_size // self.world_size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]  # the global batch
            yield self.epoch, batch[self.rank * share : (self.rank + 1) * share]  # all of it in one process


def make_loader(dataset, batch_size, *, shuffle, drop_last, num_workers=0, generator=None, pin_memory=False,
                max_batches=None, rank=0, world_size=1):
    """A DataLoader of whole batches from a batch dataset; returns ``(loader, sampler)``.

    Workers are persistent (started once; the epoch travels in each request) and use the
    ``spawn`` context, so no zarr/h5py state or thread is ever forked. ``batch_size`` is
    the global batch; with ``world_size`` > 1 this rank's loader yields its share of it
    (:class:`EpochBatchSampler`).

    Raises:
        ValueError: ``drop_last`` and fewer samples than one batch; see :class:`EpochBatchSampler`.
    """
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the split has {len(dataset)} samples, fewer than one batch of {batch_size}; lower data.batch_size"
        )
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, drop_last, generator, max_batches, rank,
                                world_size)
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(persistent_workers=True, multiprocessing_context="spawn", prefetch_factor=4)
    # The loader draws its workers' base seed from its own generator, never from the
    # global torch RNG, so a resumed run consumes the global stream exactly as a straight one.
    loader = DataLoader(
        dataset, batch_size=None, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0), **kwargs
    )
    return loader, sampler


def write_synthetic_store(path, n_train=32, n_val=16, num_class=4, benchmark="ntu60-xsub", frames=50,
                          persons=2, seed=0, modalities=None):
    """Write a small random store with the full schema (for tests, benches and smoke runs).

    Each class gets its own mean pose offset, so a linear classifier can learn something.
    All six ``modalities/<name>`` arrays are random (not derived from the joints); the
    stage attributes give the default modality parameters (``t_length = frames``) and
    ``synthetic: True``. Not for anything but plumbing checks.

    Returns:
        the path written.
    """
    from ikem_data.modalities.stage import stage_params
    from ikem_data.names import MODALITIES

    modalities = tuple(modalities or MODALITIES)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    labels = (np.arange(n) % num_class).astype(np.int16)
    with open_store(path, "w") as store:
        header_frames = rng.integers(30, 120, size=n).astype(np.int32)
        store.create_array("raw/frames", (n,), np.int32)[...] = header_frames
        store.create_array("raw/label", (n,), np.int16)[...] = labels
        names = np.array([f"S001C001P001R001A{int(l) + 1:03d}".encode() for l in labels], dtype="S20")
        store.create_array("raw/name", (n,), "S20")[...] = names
        order = rng.permutation(n)
        store.create_array(f"splits/{benchmark}/train", (n_train,), np.int64)[...] = np.sort(order[:n_train])
        store.create_array(f"splits/{benchmark}/val", (n_val,), np.int64)[...] = np.sort(order[n_train:])
        offsets = rng.normal(0, 1, size=(num_class, 3, 1, 25, 1)).astype(np.float32)
        for name in modalities:
            data = rng.normal(0, 0.3, size=(n, 3, frames, 25, persons)).astype(np.float32)
            data += offsets[labels.astype(np.int64)]
            store.create_array(f"modalities/{name}", data.shape, np.float32,
                               chunks=(16, 3, frames, 25, persons))[...] = data
        store.create_array("modalities/valid_length", (n,), np.int32)[...] = header_frames
        store.attrs["gendata"] = {"complete": True, "params": {"synthetic": True}}
        store.attrs["modalities"] = {"complete": True, "params": {**stage_params(t_length=frames), "synthetic": True,
                                                                  "names": list(modalities)}}  # the ones written
    return path
