"""Crafted inputs for tests: `.skeleton` files (the layout of METHOD.md §1.1), Kinect v2
CSV captures and a minimal raw store; and what the gendata tests share: the raw arrays of
a store, their comparison, a time limit."""

import contextlib
import signal

import numpy as np

from ikem_data.store import open_store

RAW = ("xyz", "frames", "bodies", "label", "setup", "camera", "subject", "replication", "name")


def skeleton_text(frames, header=None, newline="\n"):
    """Text of a `.skeleton` file.

    Args:
        frames: list over frames of lists of bodies ``(body_id, xyz (25, 3))``.
        header: frame count to write (default: ``len(frames)``).
    """
    lines = [str(len(frames) if header is None else header)]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, xyz in bodies:
            lines.append(f"{body_id} 0 1 1 1 1 0 0.02764709 0.05745083 2")
            lines.append(str(len(xyz)))
            for x, y, z in xyz:
                lines.append(f"{x!r} {y!r} {z!r} 277.419 191.8218 1036.233 519.1677 0 0 0 0 2")
    return newline.join(lines) + newline


def random_frames(rng, n_frames, bodies_per_frame, ids=None):
    """Random bodies: ``bodies_per_frame`` is an int or a list per frame; xyz rounded to 7 digits."""
    if isinstance(bodies_per_frame, int):
        bodies_per_frame = [bodies_per_frame] * n_frames
    ids = ids or [72057594037931101 + 7 * k for k in range(8)]
    frames = []
    for t in range(n_frames):
        bodies = []
        for m in range(bodies_per_frame[t]):
            xyz = np.round(rng.normal(size=(25, 3)) + [0, 0, 3], 7)
            bodies.append((ids[m], [tuple(float(v) for v in row) for row in xyz]))
        frames.append(bodies)
    return frames


def expected_listed(frames, max_bodies=2):
    """(3, T, 25, M) float32 as the reference fills it: slot = listing order."""
    out = np.zeros((3, len(frames), 25, max_bodies), dtype=np.float64)
    for t, bodies in enumerate(frames):
        for m, (_, xyz) in enumerate(bodies[:max_bodies]):
            out[:, t, :, m] = np.asarray(xyz, dtype=np.float64).T
    return out.astype(np.float32)


def good_folder(root, frames):
    """``root/raw`` of well-formed one-body files ``S001C001P{k:03d}R001A001`` (k = 1, 2, ...)
    with the given frame counts; returns (folder, {name: frames as :func:`random_frames` gives})."""
    rng = np.random.default_rng(0)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    good = {}
    for k, n in enumerate(frames, 1):
        name = f"S001C001P{k:03d}R001A001"
        good[name] = random_frames(rng, n, 1)
        (raw / f"{name}.skeleton").write_text(skeleton_text(good[name]))
    return raw, good


def kinect_capture(path, frames=3, seed=0):
    """Write a KinectReader CSV capture: per line a timestamp, then x, y, z, tracking state 2
    of each of the 25 joints (xyz rounded to 6 digits, about 2 m away); returns ``path``."""
    rng = np.random.default_rng(seed)
    lines = []
    for t in range(frames):
        xyz = np.round(rng.normal(size=(25, 3)) + [0, 0, 2], 6)
        lines.append(f"{1000 + 333333 * t}," + ",".join(f"{x!r},{y!r},{z!r},2" for x, y, z in xyz.tolist()) + ",")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_raw_store(path, xyz, frames, names, complete=True):
    """A minimal raw store as `ikem-data gendata` leaves it (DESIGN.md §3): labels
    ``arange(N) % 60``, the first third of the samples the ntu60-xsub val split."""
    n = xyz.shape[0]
    with open_store(path, "w") as store:
        store.create_array("raw/xyz", xyz.shape, np.float32, chunks=(4,) + xyz.shape[1:])[:] = xyz
        store.create_array("raw/frames", (n,), np.int32)[:] = frames
        store.create_array("raw/name", (n,), "S20")[:] = np.array(names, dtype="S20")
        store.create_array("raw/label", (n,), np.int16)[:] = np.arange(n) % 60
        store.create_array("splits/ntu60-xsub/train", (n - n // 3,), np.int64)[:] = np.arange(n // 3, n)
        store.create_array("splits/ntu60-xsub/val", (n // 3,), np.int64)[:] = np.arange(n // 3)
        store.attrs["dataset"] = "ntu60-test"
        store.attrs["gendata"] = {"complete": complete, "params": {"bodies": "listed"}}
    return path


def store_arrays(path):
    """Every ``raw/`` array and split of a complete store, by name."""
    with open_store(path) as store:
        assert store.attrs["gendata"]["complete"] is True
        out = {name: np.asarray(store[f"raw/{name}"][:]) for name in RAW}
        for bench in store.benchmarks():
            for part in ("train", "val"):
                out[f"{bench}/{part}"] = store.split(bench, part)
        return out


def assert_same_arrays(a, b):
    """Two :func:`store_arrays` results hold the same names, dtypes and values."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@contextlib.contextmanager
def alarm(seconds):
    """Raise TimeoutError in the block after ``seconds`` (a test that would hang fails instead)."""
    def hang(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
