"""A toy input format for the registry test: gendata reads it without a line of its own.

Files ``<name>.toy``: line 1 the 0-based label, then one frame per line, 20 x (x y z)."""

from pathlib import Path

import numpy as np


def plan_samples(raw, dataset=None, ignored=None):
    samples = []
    for index, path in enumerate(sorted(Path(raw).glob("*.toy"))):
        label = int(path.read_text().splitlines()[0])
        samples.append(dict(name=path.stem, path=str(path), label=label, ids=(-1, -1, index + 1, -1),
                            split=f"toy-half/{'train' if index % 2 == 0 else 'val'}"))
    return dict(dataset="toy", samples=samples, skipped=[], failed=[], params=dict(toy_rule="every line a frame"))


def load_sample(source, max_bodies, frames_only=False, body_policy="listed"):
    lines = Path(source).read_text().splitlines()[1:]
    for number, line in enumerate(lines, 2):
        if len(line.split()) != 60:
            raise ValueError(f"{source}:{number}: expected 60 numbers")
    frames = np.array([[float(v) for v in line.split()] for line in lines], dtype=np.float32)
    if frames_only:
        return ("ok", len(lines))
    xyz = np.zeros((3, len(lines), 20, max_bodies), dtype=np.float32)
    xyz[..., 0] = frames.reshape(len(lines), 20, 3).transpose(2, 0, 1)
    return ("ok", xyz, len(lines), 1)
