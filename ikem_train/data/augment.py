"""Pretraining augmentations in numpy (METHOD.md §4): symmetric-pad temporal crop, then shear.

All functions take one sample ``x`` of shape (C=3, T, V, M) float32 and a
``numpy.random.Generator``; they return a new array of the same shape and dtype.
A negative ratio/amplitude disables the transform (the reference's ``-1``).

Worker seeding: :func:`worker_rng` gives each DataLoader worker its own stream from
(seed, epoch, rank, worker), so augmentations never repeat across epochs, workers or
processes (the reference re-seeds workers with their id each epoch, METHOD.md §11 item 15).
"""

from __future__ import annotations

import numpy as np


def worker_rng(seed: int, epoch: int, worker: int, rank: int = 0) -> np.random.Generator:
    """Independent random stream for (base seed, 1-based epoch, worker id, process rank).

    Built from ``numpy.random.SeedSequence([seed, epoch, worker])`` on rank 0 (the
    streams of a single process, so runs made before multi-process training resume
    unchanged) and ``[seed, epoch, worker, rank]`` on ranks >= 1: streams for different
    epochs, workers or ranks are statistically independent. (The rank is never appended
    as a trailing 0: SeedSequence would not tell ``[s, e, w, 0]`` from ``[s, e, w]``.)
    """
    key = [int(seed) & 0xFFFFFFFF, int(epoch), int(worker)] + ([int(rank)] if rank else [])
    return np.random.default_rng(np.random.SeedSequence(key))


def symmetric_pad(x: np.ndarray, pad: int) -> np.ndarray:
    """Pad the time axis with mirrored edge frames (edge frame repeated).

    Front: frames ``pad-1 … 0``; back: frames ``T-1 … T-pad`` (METHOD.md §4.1).

    Args:
        x: (C, T, V, M). pad: 0 <= pad <= T.

    Returns:
        (C, T + 2 * pad, V, M) array.
    """
    if pad == 0:
        return x.copy()
    front = x[:, :pad][:, ::-1]
    back = x[:, -pad:][:, ::-1]
    return np.concatenate([front, x, back], axis=1)


def temporal_crop(x: np.ndarray, ratio: int, rng: np.random.Generator) -> np.ndarray:
    """Symmetric-pad by ``p = T // ratio`` and keep ``T`` frames from ``start ~ U{0..2p}``.

    Args:
        x: (C, T, V, M) float array.
        ratio: padding ratio (reference 6: p = 8 for T = 50); ``<= 0`` returns a copy.
        rng: numpy Generator.

    Returns:
        (C, T, V, M) array, same dtype.
    """
    if ratio is None or ratio <= 0:
        return x.copy()
    t = x.shape[1]
    pad = min(t // ratio, t)
    if pad == 0:
        return x.copy()
    padded = symmetric_pad(x, pad)
    start = int(rng.integers(0, 2 * pad + 1))
    return np.ascontiguousarray(padded[:, start : start + t])


def shear_matrix(amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """The 3x3 shear ``[[1, a, d], [b, 1, e], [c, f, 1]]`` with a..f ~ U(-r, r) (METHOD.md §4.2)."""
    first = rng.uniform(-amplitude, amplitude, size=3)  # (a, b, c)
    second = rng.uniform(-amplitude, amplitude, size=3)  # (d, e, f)
    a, b, c = first
    d, e, f = second
    return np.array([[1.0, a, d], [b, 1.0, e], [c, f, 1.0]], dtype=np.float64)


def shear(x: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Apply one random shear to every joint of every frame and person: ``p' = S p``.

    Args:
        x: (3, T, V, M) float array (xyz first).
        amplitude: r of U(-r, r); ``< 0`` returns a copy (``0`` gives the identity).
        rng: numpy Generator.
    """
    if amplitude is None or amplitude < 0:
        return x.copy()
    s = shear_matrix(amplitude, rng)
    return np.einsum("ij,jtvm->itvm", s, x).astype(x.dtype, copy=False)


def augment(x: np.ndarray, rng: np.random.Generator, shear_amplitude: float = 0.5, crop_ratio: int = 6) -> np.ndarray:
    """One pretraining view: temporal crop, then shear (the reference's order).

    Args:
        x: (3, T, V, M) float32 joint sequence.

    Returns:
        (3, T, V, M) float32.
    """
    return shear(temporal_crop(x, crop_ratio, rng), shear_amplitude, rng).astype(np.float32, copy=False)
