"""Throughput of IKEM preprocessing + the six modalities: numba kernels vs a per-sample
numpy baseline of the reference's kind, on the same data in one run.

The baseline does what the reference pipeline does per sample (METHOD.md §2-§3): numpy
centring, cv2.resize per body, a 3x3 rotation matrix and np.dot per frame, then the
modalities with numpy per sample. Our path: `preprocess` + `compute_modalities` over a
whole batch (numba, parallel over samples), and the full store stage
(`build_modalities`: zarr read, kernels, compressed writes). A memory floor (a kernel that
only reads each padded input sample and writes six outputs) shows how close the
kernels are to this machine's memory traffic bound.

Data: the real NTU files in ../shared/data (tiled to --samples, padded to 300 frames
like an NTU-60 store), or random skeletons when they are absent.

    python bench/bench_modalities.py [--samples 2048] [--baseline-samples 256] [--workers 2]
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NTU60_SAMPLES = 56578
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def load_data(n, t_max=300):
    from conftest import NTU_DIR  # noqa: E402  (same location rules as the tests)

    rng = np.random.default_rng(0)
    if NTU_DIR.is_dir() and any(NTU_DIR.glob("*.skeleton")):
        from ntu_reader import read_batch

        xyz, frames, _ = read_batch(NTU_DIR)
        source = f"{len(frames)} real NTU files tiled"
    else:
        frames = rng.integers(40, 160, size=12).astype(np.int32)
        xyz = np.zeros((12, 3, 160, 25, 2), np.float32)
        for i, f in enumerate(frames):
            xyz[i, :, :f] = rng.normal(scale=0.3, size=(3, f, 25, 2))
        source = "random skeletons (real files absent)"
    reps = math.ceil(n / len(frames))
    padded = np.zeros((len(frames), 3, t_max, 25, 2), np.float32)
    padded[:, :, : xyz.shape[2]] = xyz
    data = np.tile(padded, (reps, 1, 1, 1, 1))[:n]
    data += (rng.normal(scale=1e-3, size=data.shape) * (data != 0)).astype(np.float32)
    return data, np.tile(frames, reps)[:n], source


def baseline_one(x, frame, t_length=50):
    """Reference-style numpy for one sample (3, T, 25, 2) -> list of six arrays.

    Mirrors the reference's per-sample work (METHOD.md §2): raw motion over all T frames
    (resized too, then unused), centring, cv2.resize per body for position and motion,
    rotation matrices built frame by frame and applied frame by frame, then the six
    modalities (§3) with numpy on this one sample.
    """
    import cv2

    from ikem_data.layouts import get_layout

    layout = get_layout("kinect_v2_25")
    IKEM_BONE_PAIRS, ROTATION_AXIS_PAIRS = layout.bone_pairs["ikem"], layout.axis_pairs

    x = np.array(x)  # the reference copies the sample out of its memory-mapped array
    (abs(x[:, :, 0, :]).sum(axis=0).sum(axis=0) != 0) * 1.0  # and counts the persons
    motion_raw = np.zeros_like(x)
    motion_raw[:, :-1] = x[:, 1:] - x[:, :-1]
    length = int((np.abs(x[:, :, 0, 0]).sum(axis=0) != 0).sum())
    x = x - x[:, :, 20:21, :]
    resized, _ = [np.zeros((3, t_length, 25, 2)) for _ in range(2)]
    for m in range(2):
        for src, dst in ((x, resized), (motion_raw, _)):
            dst[:, :, :, m] = cv2.resize(np.ascontiguousarray(src[:, :length, :, m].transpose(1, 2, 0)),
                                         (25, t_length), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    resized = resized.astype(np.float32)
    for m in range(2):
        body = resized[:, :, :, m]
        s = body[:, :, 8] - body[:, :, 4]
        s[1] = 0
        deg = np.arccos(s[0] / (np.sqrt((s ** 2).sum(0)) + 1e-4)) * (180 / np.pi)
        if s[2].sum() >= 0:
            deg = -deg
        mats = np.zeros((0, 3, 3))
        for d in deg * np.pi / 180:
            rot = np.zeros((3, 3))
            rot[0, 0], rot[0, 2], rot[1, 1], rot[2, 0], rot[2, 2] = np.cos(d), -np.sin(d), 1, np.sin(d), np.cos(d)
            mats = np.concatenate((mats, rot[None]), axis=0)
        turned = np.zeros((0, 25, 3))
        for t, frame_xyz in enumerate(body.transpose(1, 2, 0)):
            turned = np.concatenate((turned, np.dot(mats[t], frame_xyz.T).T[None]), axis=0)
        resized[:, :, :, m] = turned.transpose(2, 0, 1)
    j = resized
    tau = np.float32(50.0 / frame)
    mo = np.zeros_like(j)
    mo[:, :-1] = tau * (j[:, 1:] - j[:, :-1])
    acc = np.zeros_like(j)
    acc[:, :-2] = tau * (mo[:, 1:-1] - mo[:, :-2])
    bone = j - j[:, :, IKEM_BONE_PAIRS[:, 1]]
    normal = np.cross(j[:, :, 1] - j[:, :, 8], j[:, :, 4] - j[:, :, 8], axis=0)
    bone[:, :, 20] = normal / np.maximum(np.linalg.norm(normal, axis=0), 1e-12)
    parent = bone[:, :, ROTATION_AXIS_PAIRS[:, 1]]
    axis = np.cross(bone, parent, axis=0)
    unit = bone / np.maximum(np.linalg.norm(bone, axis=0), 1e-12)
    unit_p = unit[:, :, ROTATION_AXIS_PAIRS[:, 1]]
    theta = np.arctan2(np.linalg.norm(np.cross(unit, unit_p, axis=0), axis=0), (unit * unit_p).sum(0))
    omega = np.zeros_like(j)
    omega[:, :-1] = tau * (theta[1:] - theta[:-1]) * (axis / np.maximum(np.linalg.norm(axis, axis=0), 1e-12))[:, :-1]
    omega[:, :, 20] = 0
    return [j, mo, bone, acc, axis, omega]


def memory_floor(xyz):
    """Samples/s of a kernel that only reads every input sample and writes six outputs of
    (3, 50, 25, M) float32, with no arithmetic: the memory-traffic bound of any
    implementation of this stage on this machine."""
    from numba import njit, prange

    @njit(parallel=True)
    def touch(xyz, outs, tops):
        for n in prange(xyz.shape[0]):
            bits = xyz[n].reshape(-1).view(np.uint32)
            top = np.uint32(0)
            for i in range(bits.shape[0]):
                top = max(top, bits[i])
            tops[n] = top
            for k in range(outs.shape[0]):
                for i in range(outs.shape[2]):
                    outs[k, n, i] = np.float32(i)

    outs = np.empty((6, len(xyz), 3 * 50 * 25 * xyz.shape[-1]), np.float32)
    tops = np.empty(len(xyz), np.uint32)
    touch(xyz[:2], outs[:, :2], tops)
    return len(xyz) / timed(lambda: touch(xyz, outs, tops))[0]


def timed(fn, repeat=3):
    """Best wall time and the CPU time (all threads) of that run, in seconds."""
    best, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2048, help="samples for our kernels")
    parser.add_argument("--baseline-samples", type=int, default=256, help="samples for the numpy baseline")
    parser.add_argument("--workers", type=int, default=None, help="numba threads (default: all cores)")
    args = parser.parse_args()

    import numba

    from ikem_data.modalities.stage import build_modalities
    from ikem_data.modalities.kernels import compute_modalities
    from ikem_data.names import MODALITIES
    from ikem_data.modalities.preprocess import preprocess
    from ikem_data.store import open_store

    if args.workers:
        numba.set_num_threads(args.workers)
    xyz, frames, source = load_data(args.samples)
    print(f"data: {source}, {xyz.shape[0]} samples of {xyz.shape[1:]} float32; "
          f"numba threads: {numba.get_num_threads()}")

    # Into output buffers allocated once, as the store stage does step after step.
    buffers = {name: np.empty((len(xyz), 3, 50, 25, 2), np.float32) for name in MODALITIES}

    def ours(n=None):
        out = {name: buf[:n] for name, buf in buffers.items()}
        preprocess(xyz[:n], out=out["joint"])
        return compute_modalities(out["joint"], frames[:n], out=out)

    ours(16)  # compile / load the cache
    t_ours, cpu_ours = timed(ours)
    rate_ours = len(xyz) / t_ours

    nb = min(args.baseline_samples, len(xyz))
    for i in range(4):
        baseline_one(xyz[i], frames[i])  # warm up (imports, first-call set-up)
    t_base, cpu_base = timed(lambda: [baseline_one(xyz[i], frames[i]) for i in range(nb)], repeat=2)
    rate_base = nb / t_base

    # Same numbers? (baseline in its own float order: agreement to float32 noise)
    ref = baseline_one(xyz[0], frames[0])
    got = ours(1)
    worst = max(float(np.abs(r - g[0]).max()) for r, g in zip(ref, got.values()))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        with open_store(path, "w") as store:
            n = len(xyz)
            store.create_array("raw/xyz", xyz.shape, np.float32, chunks=(16,) + xyz.shape[1:])[:] = xyz
            store.create_array("raw/frames", (n,), np.int32)[:] = frames
            store.create_array("raw/name", (n,), "S20")[:] = np.array([b"S001C001P001R001A001"] * n)
            store.attrs["gendata"] = {"complete": True}
        start = time.perf_counter()
        build_modalities(path, progress=False, workers=args.workers)
        t_stage = time.perf_counter() - start
    rate_stage = len(xyz) / t_stage

    print(f"numpy baseline (per sample, reference kind): {rate_base:10.1f} samples/s  ({nb} samples)")
    rate_floor = memory_floor(xyz)
    print(f"memory floor (no arithmetic, same traffic):  {rate_floor:10.1f} samples/s  "
          f"= {rate_floor / rate_base:.0f}x the baseline (reads whole padded samples, writes six outputs)")
    print(f"numba kernels (batch):                       {rate_ours:10.1f} samples/s  "
          f"({len(xyz)} samples)  = {rate_ours / rate_base:.0f}x the baseline")
    print(f"store stage (zarr in, kernels, zarr out):    {rate_stage:10.1f} samples/s  "
          f"= {rate_stage / rate_base:.0f}x the baseline")
    us_ours, us_base = cpu_ours / len(xyz) * 1e6, cpu_base / nb * 1e6
    print(f"CPU time per sample (all threads; robust when other jobs share the cores): "
          f"kernels {us_ours:.0f} us, baseline {us_base:.0f} us = {us_base / us_ours:.0f}x")
    print(f"largest difference kernels vs baseline (sample 0, all six): {worst:.2e}")
    print(f"projected NTU-60 ({NTU60_SAMPLES} samples): kernels {NTU60_SAMPLES / rate_ours:.1f} s, "
          f"store stage {NTU60_SAMPLES / rate_stage:.1f} s, baseline {NTU60_SAMPLES / rate_base / 60:.1f} min")


if __name__ == "__main__":
    main()
