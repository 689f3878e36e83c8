"""Parser throughput: ikem's numba byte-level parser beside a plain-Python baseline reader.

The baseline reads like the reference (`ntu_read_skeleton.py`): line by line, a dict per
body and per joint, then fills a (3, T, 25, 2) array. Both run in this one process (one
core) on the same real files from ../shared/data/ntu_rgbd_skeleton, several rounds each.
Then full `gendata` runs (1 and --workers processes) over the files linked --copies
times under new names into a temporary folder, written to a temporary zarr store.

Last, the pyskl import: a pickle of --pyskl-samples samples in pyskl's own layout (the
real files tiled under new subject ids, keypoint (M, T, 25, 3) float16, protocol 2 as
pyskl's mmcv.dump writes) read by `gendata --input-format pyskl` into a zarr store, beside
the baseline a user would write: unpickle the whole file (a user's plain `pickle.load`;
timed here through ikem's restricted unpickler, which reads as fast and cannot run code
the file carries) and stack it with numpy into one zero-padded (N, 3, T_max, 25, 2)
float32 array. Each runs in its own process, whose peak RSS is shown.

    python bench/bench_gendata.py [--raw FOLDER] [--rounds 5] [--pyskl-samples 3000]

Prints MB/s, files/s, the speed ratio and the peak RSS; samples/s and peak RSS for the
pyskl import and its baseline.
"""

import argparse
import json
import pickle
import resource
import subprocess
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
    from ikem_data.formats.skeleton import load_xyz

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
    """Peak RSS of this process image. Linux keeps ru_maxrss across exec, so a child would
    report its parent's peak too; VmHWM is the peak of the current image alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_pyskl_pickle(files, path, samples):
    """A pyskl-format pickle of ``samples`` samples: the real files tiled under new subject ids."""
    from ikem_data.formats.skeleton import load_xyz

    sources = []
    for file in files:
        xyz, frames, _ = load_xyz(file)
        persons = 2 if xyz[..., 1].any() else 1
        sources.append((file.stem, np.ascontiguousarray(xyz[..., :persons].transpose(3, 1, 2, 0)).astype(np.float16),
                        frames))
    annotations = []
    for k in range(samples):
        stem, keypoint, frames = sources[k % len(sources)]
        name = f"{stem[:8]}P{k // len(sources) + 1:03d}{stem[12:]}"
        annotations.append(dict(frame_dir=name, label=int(stem[-3:]) - 1, keypoint=keypoint.copy(),
                                total_frames=frames))
    names = [a["frame_dir"] for a in annotations]
    train = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
    split = dict(xsub_train=[n for n in names if int(n[9:12]) in train],
                 xsub_val=[n for n in names if int(n[9:12]) not in train],
                 xview_train=[n for n in names if n[5:8] != "001"], xview_val=[n for n in names if n[5:8] == "001"])
    with open(path, "wb") as f:
        pickle.dump(dict(split=split, annotations=annotations), f, protocol=2)
    return sum(a["keypoint"].nbytes for a in annotations)


def child(kind, pkl, out):
    """Run one pyskl import in this (fresh) process; print seconds and peak RSS as JSON."""
    start = time.perf_counter()
    if kind == "ikem":
        from ikem_data.gendata.run import gendata

        state = gendata(pkl, out, input_format="pyskl", progress=False, log=lambda m: None)
        n = state["n_samples"]
    else:  # BASELINE, what a user would write: unpickle the whole file + numpy stacking (read here with
        # ikem's restricted unpickler, as fast as plain pickle.load and unable to run code in the file)
        from ikem_data.formats.pyskl import SafeUnpickler

        with open(pkl, "rb") as f:
            data = SafeUnpickler(f).load()
        annotations = data["annotations"]
        n, t_max = len(annotations), max(a["keypoint"].shape[1] for a in annotations)
        xyz = np.zeros((n, 3, t_max, 25, 2), dtype=np.float32)
        for i, a in enumerate(annotations):
            kp = a["keypoint"]
            xyz[i, :, : kp.shape[1], :, : kp.shape[0]] = kp.transpose(3, 1, 2, 0)
        np.save(out, xyz)
    print(json.dumps(dict(seconds=time.perf_counter() - start, samples=n, rss_mb=peak_rss_mb())))


def bench_pyskl(files, samples, tmp):
    pkl = Path(tmp) / "bench_3danno.pkl"
    data_mb = write_pyskl_pickle(files, pkl, samples) / 1e6
    print(f"pyskl import: {samples} samples, keypoints {data_mb:.1f} MB float16, pickle {pkl.stat().st_size / 1e6:.1f} "
          f"MB; one process each")
    for kind, label, out in (("ikem", "ikem gendata --input-format pyskl (zarr)", "pyskl.zarr"),
                             ("baseline", "baseline unpickle + numpy stack (.npy)", "baseline.npy")):
        run = subprocess.run([sys.executable, __file__, "--child", kind, str(pkl), str(Path(tmp) / out)],
                             capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{label:<44} {result['samples'] / result['seconds']:8.0f} samples/s  "
              f"peak RSS {result['rss_mb']:6.0f} MB")


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="folder of .skeleton files")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (best is kept)")
    parser.add_argument("--copies", type=int, default=20, help="links of each file for the gendata run")
    parser.add_argument("--workers", type=int, default=2, help="workers for the second gendata run")
    parser.add_argument("--pyskl-samples", type=int, default=3000, help="samples in the pyskl pickle (0: skip)")
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

    from ikem_data.gendata.run import gendata

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
    if args.pyskl_samples:
        with tempfile.TemporaryDirectory() as tmp:
            bench_pyskl(files, args.pyskl_samples, tmp)


if __name__ == "__main__":
    main()
