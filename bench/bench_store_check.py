"""What the store check at open costs (``ikem_data.store.open_store``, issue 22 classes 3-4).

Builds a zarr store with the chunk *layout* of a full NTU store (N samples, ``raw/xyz``
in chunks of 16 samples, the six modalities and ``valid_length`` in chunks of 64, the
1-D raw arrays and the splits) but tiny chunks (the check lists chunks, it never reads
one, so their size does not matter), then times ``open_store(path)`` (the check; a later
open of the same unchanged files in the process only lists them) beside
``open_store(path, check=False)`` (listing and format only) and the listing alone.

Measured on the 2-core dev machine (load ~3), NTU-60 layout, 10,251 files: listing 314 ms,
check=False 308 ms, first open with the check 534-546 ms, a later open 333 ms; the
12-sample real store: 31 ms (check) vs 1.5 ms (check=False).

    python bench/bench_store_check.py            # NTU-60: N = 56,880
    python bench/bench_store_check.py --n 114480 # NTU-120
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ikem_data.modalities.stage import stage_params
from ikem_data.names import MODALITIES
from ikem_data.store import open_store
from ikem_data.store_check import scan_zarr


def build(path, n):
    with open_store(path, "w") as s:
        s.create_array("raw/xyz", (n, 3, 1, 25, 2), np.float32, chunks=(16, 3, 1, 25, 2))[...] = 0.5
        s.create_array("raw/frames", (n,), np.int32, chunks=(1024,))[...] = 1
        for name, dtype in (("bodies", np.int8), ("label", np.int16), ("setup", np.int16), ("camera", np.int16),
                            ("subject", np.int16), ("replication", np.int16)):
            s.create_array(f"raw/{name}", (n,), dtype, chunks=(1024,))[...] = 1
        s.create_array("raw/name", (n,), "S20", chunks=(1024,))[...] = b"S001C001P001R001A001"
        for part, index in (("train", np.arange(0, n, 2)), ("val", np.arange(1, n, 2))):
            s.create_array(f"splits/ntu60-xsub/{part}", index.shape, np.int64, chunks=(65536,))[...] = index
        for m in MODALITIES:
            s.create_array(f"modalities/{m}", (n, 3, 3, 25, 2), np.float32, chunks=(64, 3, 3, 25, 2))[...] = 0.5
        s.create_array("modalities/valid_length", (n,), np.int32, chunks=(64,))[...] = 1
        s.attrs["layout"] = "kinect_v2_25"
        s.attrs["gendata"] = {"complete": True, "n_samples": n, "t_max": 1, "params": {"max_bodies": 2}}
        s.attrs["modalities"] = {"complete": True, "params": stage_params(t_length=3)}


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=56_880)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layout.zarr"
        build(path, args.n)
        files = scan_zarr(path)
        open_store(path).close()  # imports, page cache
        import ikem_data.store as module

        def first_open():
            module._CHECKED.clear()  # as the first open of a process
            open_store(path).close()

        rows = [("listing alone (scan_zarr)", best(lambda: scan_zarr(path), args.repeat)),
                ("open_store, check=False", best(lambda: open_store(path, check=False).close(), args.repeat)),
                ("open_store, first (the check)", best(first_open, args.repeat)),
                ("open_store, again (listing)", best(lambda: open_store(path).close(), args.repeat))]
        print(f"N = {args.n}: {len(files)} files in the store")
        for label, (low, median) in rows:
            print(f"  {label:28s} best {low * 1e3:7.1f} ms   median {median * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
