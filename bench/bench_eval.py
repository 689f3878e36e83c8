"""Evaluation hot paths: frozen-feature extraction and KNN at NTU-60 size.

1. Feature extraction samples/s of one frozen ST-GCN (eval mode) over a synthetic store,
   beside what the reference's linear evaluation does instead: it runs the frozen encoders
   again in every one of its 100 epochs, where ikem extracts once (projected for NTU-60
   xsub, 40,091 train + 16,487 val samples).
2. Cosine 1-NN of 16k val against 40k train random 256-d features (NTU-60 xsub sizes),
   ``ikem_train.eval.knn.knn_predict``, beside a per-query numpy loop (what a short script
   does; timed on a few hundred queries and scaled) and scikit-learn's
   ``KNeighborsClassifier(metric="cosine")`` (UmURL's choice) when it is installed.

    python bench/bench_eval.py
    python bench/bench_eval.py --device cuda --extract-samples 4096
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ikem_train.data.datasets import ModalityDataset, write_synthetic_store
from ikem_train.eval.features import extract_features, random_encoders
from ikem_train.eval.knn import knn_predict
from ikem_train.training.loop import resolve_device

NTU60_XSUB = (40_091, 16_487)
STGCN = {"in_channels": 3, "hidden_channels": 16, "hidden_dim": 256, "dropout": 0.5, "graph_partition": "reference"}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def extraction_rate(samples, batch, device):
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_store(Path(tmp) / "b.zarr", n_train=samples, n_val=8, frames=50, persons=2,
                                      modalities=["joint"])
        data = ModalityDataset(store, "ntu60-xsub", "train", ["joint"])
        encoders = random_encoders(STGCN, ["joint"], seed=0).to(device)
        extract_features(encoders, data, batch, device)  # warm-up (allocator, kernels)
        _sync(device)
        t0 = time.perf_counter()
        extract_features(encoders, data, batch, device)
        _sync(device)
        return samples / (time.perf_counter() - t0)


def numpy_loop_seconds(gallery, labels, queries):
    """A per-query numpy 1-NN, the way a short evaluation script is written."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for q in queries:
        labels[int(np.argmax(g @ (q / np.linalg.norm(q))))]
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--extract-samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train", type=int, default=NTU60_XSUB[0])
    parser.add_argument("--val", type=int, default=NTU60_XSUB[1])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--loop-queries", type=int, default=300, help="queries timed for the numpy loop")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} torch threads")

    rate = extraction_rate(args.extract_samples, args.batch, device)
    total = sum(NTU60_XSUB)
    print(f"feature extraction, one ST-GCN (3, 50, 25, 2), batch {args.batch}: {rate:,.0f} samples/s")
    print(f"  NTU-60 xsub ({total:,} samples), one modality: ikem extracts once {total / rate / 60:8.1f} min; "
          f"reference linear eval, encoders run in each of 100 epochs {100 * total / rate / 3600:8.1f} h")

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(args.train, args.dim)).astype(np.float32)
    labels = rng.integers(0, 60, size=args.train)
    queries = rng.normal(size=(args.val, args.dim)).astype(np.float32)
    g, q, y = torch.from_numpy(gallery).to(device), torch.from_numpy(queries).to(device), torch.from_numpy(labels)
    knn_predict(g[:1000], y[:1000], q[:100])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    pred = knn_predict(g, y, q)
    _sync(device)
    ours = time.perf_counter() - t0
    loop = numpy_loop_seconds(gallery, labels, queries[: args.loop_queries]) * args.val / args.loop_queries
    print(f"cosine 1-NN, {args.val:,} val x {args.train:,} train x {args.dim}-d:")
    print(f"  ikem knn_predict            {ours:8.2f} s")
    print(f"  numpy loop per query        {loop:8.2f} s (timed on {args.loop_queries} queries)   {loop / ours:6.1f}x")
    try:
        from sklearn.neighbors import KNeighborsClassifier
    except ImportError:
        print("  scikit-learn not installed: its KNeighborsClassifier(metric='cosine') is not timed")
    else:
        t0 = time.perf_counter()
        sk = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(gallery, labels).predict(queries)
        seconds = time.perf_counter() - t0
        agree = float((sk == pred.cpu().numpy()).mean())
        print(f"  scikit-learn cosine 1-NN    {seconds:8.2f} s   {seconds / ours:6.1f}x   (agreement {agree:.4f})")


if __name__ == "__main__":
    main()
