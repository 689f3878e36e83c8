"""Parser throughput: ikem's numba byte-level parser beside a plain-Python baseline reader.

The baseline reads like the reference (`ntu_read_skeleton.py`): line by line, a dict per
body and per joint, then fills a (3, T, 25, 2) array. Both run in this one process (one
core) on the same real files from ../shared/data/ntu_rgbd_skeleton, several rounds each.
Then full `gendata` runs (1 and --workers processes) over the files linked --copies
times under new names into a temporary folder, written to a temporary zarr store.

    python bench/bench_gendata.py [--raw FOLDER] [--rounds 5]

Prints MB/s, files/s, the speed ratio and the peak RSS.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "ntu_rgbd_skeleton"


def baseline_read(path):
    """Plain-Python reader of the reference's kind: a dict per frame, body and joint."""
    with open(path) as f:
        info = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(info["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                keys = ["bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
                        "handRightState", "isResticted", "leanX", "leanY", "trackingState"]
                body = {k: float(v) for k, v in zip(keys, f.readline().split())}
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    jkeys = ["x", "y", "z", "depthX", "depthY", "colorX", "colorY", "orientationW",
                             "orientationX", "orientationY", "orientationZ", "trackingState"]
                    body["jointInfo"].append({k: float(v) for k, v in zip(jkeys, f.readline().split())})
                frame["bodyInfo"].append(body)
            info["frameInfo"].append(frame)
    data = np.zeros((3, info["numFrame"], 25, 2))
    for n, frame in enumerate(info["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, v in enumerate(body["jointInfo"]):
                if m < 2 and j < 25:
                    data[:, n, j, m] = [v["x"], v["y"], v["z"]]
    return data.astype(np.float32)


def ours_read(path):
    from ikem_data.skeleton import load_xyz

    return load_xyz(path)[0]


def timed(reader, files, rounds):
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for path in files:
            reader(path)
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="folder of .skeleton files")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (best is kept)")
    parser.add_argument("--copies", type=int, default=20, help="links of each file for the gendata run")
    parser.add_argument("--workers", type=int, default=2, help="workers for the second gendata run")
    args = parser.parse_args()
    files = sorted(args.raw.glob("*.skeleton"))
    if not files:
        sys.exit(f"no .skeleton files in {args.raw}")
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    for path in files:  # warm-up: numba compile/cache load, page cache; and a correctness check
        np.testing.assert_array_equal(ours_read(path), baseline_read(path))
    t_base = timed(baseline_read, files, args.rounds)
    t_ours = timed(ours_read, files, args.rounds)
    print(f"{len(files)} files, {megabytes:.2f} MB, best of {args.rounds} rounds, one core")
    print(f"baseline (Python, dict per joint): {megabytes / t_base:8.2f} MB/s  {len(files) / t_base:8.1f} files/s")
    print(f"ikem (numba byte-level parser):    {megabytes / t_ours:8.2f} MB/s  {len(files) / t_ours:8.1f} files/s")
    print(f"ratio: {t_base / t_ours:.1f}x")

    from ikem_data.gendata import gendata

    # End to end on a bigger folder: the real files linked under new names (subjects 1-99).
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        copies = 0
        for subject in range(1, args.copies + 1):
            for path in files:
                (raw / f"{path.stem[:8]}P{subject:03d}{path.stem[12:]}.skeleton").symlink_to(path.resolve())
                copies += 1
        size = megabytes * args.copies
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            gendata(raw, Path(tmp) / f"bench{workers}.zarr", workers=workers, progress=False, log=lambda m: None)
            t_gen = time.perf_counter() - start
            print(f"gendata end to end ({copies} files, {workers} worker{'s' if workers > 1 else ''}, zarr): "
                  f"{size / t_gen:8.2f} MB/s  {copies / t_gen:8.1f} files/s")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
