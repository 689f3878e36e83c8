"""Is a training run limited by loading or by compute?

Prints the DataLoader's samples/s (store read + two augmented views, as pretraining
streams them) beside the model's training samples/s (forward, backward, SGD step) on the
same device, and their ratio. The issue's target: loading at least 10x faster than a
training step consumes. Rerun on a GPU machine to see the figure that matters there.

    python bench/bench_train.py                         # CPU here: SkeletonCLR (joint)
    python bench/bench_train.py --modalities all        # the six-modality teacher
    python bench/bench_train.py --device cuda --batch 128 --steps 20
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ikem_data.names import resolve_modalities
from ikem_train.data import PretrainDataset, make_loader, write_synthetic_store
from ikem_train.loop import resolve_device
from ikem_train.model import PretrainModel


def loading_rate(store, batch, workers, batches):
    dataset = PretrainDataset(store, "ntu60-xsub")
    loader, _ = make_loader(dataset, batch, shuffle=True, drop_last=True, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and first store open are not throughput
    t0 = time.perf_counter()
    n = sum(b["view1"].shape[0] for _, b in zip(range(batches), it))
    return n / (time.perf_counter() - t0)


def training_rate(store, batch, modalities, device, steps):
    dataset = PretrainDataset(store, "ntu60-xsub")
    loader, _ = make_loader(dataset, batch, shuffle=True, drop_last=True)
    data = next(iter(loader))
    view1, view2, frames = (data[k].to(device) for k in ("view1", "view2", "frames"))
    model = PretrainModel(modalities, queue_size=batch * 16, cross_epoch=0).to(device)  # phase 2 when several
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(view1, view2, frames, epoch=1)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1024, help="synthetic training samples in the store")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to measure")
    parser.add_argument("--modalities", default="joint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = parser.parse_args()
    device = resolve_device(args.device)
    modalities = resolve_modalities(args.modalities)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_store(Path(tmp) / "bench.zarr", n_train=args.samples, n_val=8, frames=50, persons=2)
        batches = args.samples // args.batch - 1
        print(f"store: {args.samples} synthetic samples (3, 50, 25, 2) float32, batch {args.batch}, device {device}, "
              f"{torch.get_num_threads()} torch threads")
        loads = {}
        for workers in (int(w) for w in args.workers.split(",")):
            loads[workers] = loading_rate(store, args.batch, workers, batches)
            print(f"loading, {workers} workers: {loads[workers]:10.0f} samples/s")
        train = training_rate(store, args.batch, modalities, device, args.steps)
        print(f"training ({', '.join(modalities)}): {train:10.1f} samples/s")
        best = max(loads.values())
        verdict = "loading keeps up" if best >= 10 * train else "LOADING LIMITS the run"
        print(f"loading / training = {best / train:.1f}x (target >= 10x): {verdict}")


if __name__ == "__main__":
    main()
