"""A tiny, obviously-correct `.skeleton` reader for tests (METHOD.md §1.1).

Independent of ikem's own parser on purpose: it reads the text line by line and keeps
x, y, z of the first two listed bodies of every frame.
"""

import numpy as np


def read_xyz(path, max_bodies=2):
    """Return ((3, numFrame, 25, 2) float32 metres, numFrame) of one `.skeleton` file."""
    lines = [line.strip() for line in open(path).read().splitlines() if line.strip()]
    pos = 0
    n_frames = int(lines[pos]); pos += 1
    out = np.zeros((3, n_frames, 25, max_bodies), dtype=np.float64)
    for t in range(n_frames):
        n_bodies = int(lines[pos]); pos += 1
        for m in range(n_bodies):
            pos += 1  # body info line
            n_joints = int(lines[pos]); pos += 1
            for v in range(n_joints):
                values = [float(x) for x in lines[pos].split()]; pos += 1
                if m < max_bodies and v < 25:
                    out[:, t, v, m] = values[:3]
    return out.astype(np.float32), n_frames


def read_batch(ntu_dir, names=None):
    """Stack files into ((N, 3, T_max, 25, 2) float32 zero-padded, frames (N,), names)."""
    paths = sorted(ntu_dir.glob("*.skeleton"))
    if names is not None:
        paths = [p for p in paths if p.stem in names]
    arrays, frames = zip(*(read_xyz(p) for p in paths))
    t_max = max(frames)
    xyz = np.zeros((len(arrays), 3, t_max, 25, 2), dtype=np.float32)
    for n, a in enumerate(arrays):
        xyz[n, :, : a.shape[1]] = a
    return xyz, np.asarray(frames, dtype=np.int32), [p.stem for p in paths]
