"""Is a training run limited by loading, by compute, by the host, or by too few processes?

Sections (``--sections``, comma-separated; the default is every CPU section):

- ``loading``: the DataLoader's samples/s (store read + two augmented views, as
  pretraining streams them) for each ``--workers`` count.
- ``training``: the model's training samples/s (forward, backward, SGD step) on the same
  device, and loading / training (the issue's target: loading at least 10x faster).
- ``syncs``: host syncs per training step, counted on the CPU: every ``.item()``,
  ``float()``, ``int()``, ``bool()``, ``.tolist()`` on a tensor during a run of 9 steps
  minus a run of 1 step, divided by 8 (each is a wait for the GPU on CUDA), for the
  six-modality teacher in phase 1 and 2 and the student. Also counted: host-to-device
  copies of numpy arrays (``torch.as_tensor(array, device=...)``; blocking copies on CUDA).
- ``gloo``: samples/s of ``ikem-train pretrain`` on 1 and 2 CPU processes (gloo, DDP),
  through the training loop; 1 process gets all the cores' threads, 2 processes one each.
- ``stacked``: samples/s of one training step (forward, backward, SGD) of the six-modality
  teacher (phase 2), the three-modality student and one modality, with the encoders run one
  by one (``model.stacked_encoders=false``, the reference's style) and as one stacked pass
  (``true``), at the same batch; beside them the FLOPs of a step (torch's FlopCounterMode)
  and the rate they imply against this machine's dense-convolution GFLOP/s: a step near
  that ceiling is compute-bound, and no reordering of launches can make it much faster.
- ``kernels``: ms per call of torch's ``nn.Dropout`` against ikem's ``Dropout`` on an
  activation of the first blocks (64, 16, 50, 25).
- ``umurl``: UmURL (model.method: umurl, the paper's widths: h 1024, 64 frames, four views)
  beside the IKEM teacher (six encoders, phase 2) and student (three encoders distilled from
  the teacher): parameters (trained / all), samples/s of one training step (forward,
  backward, the model's optimizer: Adam for UmURL, SGD for IKEM) and GFLOP per sample
  (torch's FlopCounterMode, forward + backward), at ``--batch`` and ``--persons``.
- ``loop``: samples/s and peak GPU memory through the training loop (``jobs.pretrain`` /
  ``jobs.distill``, DataLoader included) for ``--loop`` models, with and without
  ``torch.compile`` (``--compile off,on``): what bench/gpu_check.sh runs on a GPU.

    python bench/bench_train.py                          # CPU: loading, training, syncs, gloo
    python bench/bench_train.py --modalities all         # the six-modality teacher
    python bench/bench_train.py --sections syncs         # host syncs per step only
    python bench/bench_train.py --sections stacked,kernels   # stacked vs one by one, dropout
    python bench/bench_train.py --sections umurl --batch 16 --persons 2   # UmURL beside IKEM
    bench/gpu_check.sh                                   # one GPU, paper batch and queue

To count the syncs of another version of ikem, put its source first on PYTHONPATH:
``git archive HEAD ikem_data ikem_train | tar -x -C /tmp/old && PYTHONPATH=/tmp/old
python bench/bench_train.py --sections syncs``.
"""

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

from ikem_data.names import MODALITIES, resolve_modalities
from ikem_train import jobs
from ikem_train.data.datasets import PretrainDataset, make_loader, write_synthetic_store
from ikem_train.training.loop import resolve_device
from ikem_train.methods.model import DistillModel, PretrainModel

BENCH = "ntu60-xsub"
TINY = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=16",
        "distill.queue_size=16", "distill.student_dim=48", "data.batch_size=4", "data.num_workers=0",
        "run.device=cpu", "run.progress=false"]


def quiet(*args, **kwargs):
    pass


def loading_rate(store, batch, workers, batches):
    dataset = PretrainDataset(store, BENCH)
    loader, _ = make_loader(dataset, batch, shuffle=True, drop_last=True, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and first store open are not throughput
    t0 = time.perf_counter()
    n = sum(b["view1"].shape[0] for _, b in zip(range(batches), it))
    return n / (time.perf_counter() - t0)


def training_rate(store, batch, modalities, device, steps):
    dataset = PretrainDataset(store, BENCH)
    loader, _ = make_loader(dataset, batch, shuffle=True, drop_last=True)
    data = next(iter(loader))
    views = tuple(data[k].to(device) for k in ("view1", "view2", "frames"))
    # phase 2 when several modalities
    return step_rate(lambda: PretrainModel(modalities, queue_size=batch * 16, cross_epoch=0), views, device, steps)[0]


# -- stacked encoders against one by one ---------------------------------------------------------


def _teacher_state(batch):
    teacher = PretrainModel(list(MODALITIES), queue_size=batch * 16)
    return teacher.state_dict(), {"modalities": list(MODALITIES)}


def step_rate(make_model, views, device, steps):
    """(samples/s, GFLOP per sample) of ``steps`` optimisation steps of ``make_model()`` after one warm-up,
    with the model's own optimizer (``make_optimizer``, UmURL's) or SGD."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if hasattr(model, "make_optimizer"):
        from ikem_train.config import Config

        opt = model.make_optimizer(params, Config())
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(*views, epoch=1)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # warm-up, counted
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    batch = views[0].shape[0]
    return steps * batch / (time.perf_counter() - t0), counter.get_total_flops() / batch / 1e9


def dense_conv_gflops(device):
    """GFLOP/s of the encoder's largest convolution (256 -> 256, 9x1, 13 x 25, batch 64) on ``device``."""
    x = torch.randn(64, 256, 13, 25, device=device)
    w = torch.randn(256, 256, 9, 1, device=device)
    torch.nn.functional.conv2d(x, w, padding=(4, 0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        torch.nn.functional.conv2d(x, w, padding=(4, 0))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 5 * 2 * x.numel() * 256 * 9 / (time.perf_counter() - t0) / 1e9


def stacked_rates(batch, persons, device, steps):
    """Rows (name, one-by-one samples/s, stacked samples/s, GFLOP/sample) for teacher, student, joint."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 50, 25, persons, generator=g).to(device)
    views = (x, 1.1 * x, torch.full((batch,), 50.0, device=device))
    state, config = _teacher_state(batch)
    models = {
        "teacher (6, phase 2)": lambda stacked: PretrainModel(list(MODALITIES), queue_size=batch * 16, cross_epoch=0,
                                                            stacked_encoders=stacked),
        "student (3 + teacher)": lambda stacked: DistillModel(state, config, queue_size=batch * 16,
                                                             stacked_encoders=stacked),
        "joint (1)": lambda stacked: PretrainModel(["joint"], queue_size=batch * 16, stacked_encoders=stacked),
    }
    rows = []
    for name, make in models.items():
        alone, flops = step_rate(lambda: make(False), views, device, steps)
        stacked, _ = step_rate(lambda: make(True), views, device, steps)
        rows.append((name, alone, stacked, flops))
    return rows


def umurl_rows(batch, persons, device, steps):
    """Rows (name, trained parameters, all parameters, samples/s, GFLOP/sample) for the IKEM teacher
    (phase 2), the IKEM student and UmURL at the paper's widths."""
    from ikem_train.config import UmURLConfig
    from ikem_train.methods.umurl import UmURLModel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 50, 25, persons, generator=g).to(device)
    ikem_views = (x, 1.1 * x, torch.full((batch,), 50.0, device=device))
    u = UmURLConfig()
    umurl_views = tuple(torch.randn(batch, 3, u.t_length, 25, persons, generator=g).to(device) for _ in range(4))
    state, config = _teacher_state(batch)
    models = {
        "IKEM teacher (6, phase 2)": (lambda: PretrainModel(list(MODALITIES), queue_size=batch * 16, cross_epoch=0),
                                      ikem_views),
        "IKEM student (3)": (lambda: DistillModel(state, config, queue_size=batch * 16), ikem_views),
        f"UmURL (h {u.hidden_size}, {u.t_length} frames)": (
            lambda: UmURLModel({"frames": u.t_length, "persons": persons, "hidden_size": u.hidden_size,
                                "num_heads": u.num_heads, "num_layers": u.num_layers}, projector_dim=u.projector_dim),
            umurl_views),
    }
    rows = []
    for name, (make, views) in models.items():
        model = make()
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        del model
        rate, flops = step_rate(make, views, device, steps)
        rows.append((name, trained, total, rate, flops))
    return rows


def dropout_ms(device):
    """(nn.Dropout ms, ikem Dropout ms) per call on a (64, 16, 50, 25) activation."""
    from ikem_train.nets.stgcn import Dropout

    x = torch.randn(64, 16, 50, 25, device=device)
    out = []
    for layer in (torch.nn.Dropout(0.5, inplace=True), Dropout(0.5)):
        layer(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            layer(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) / 20 * 1e3)
    return tuple(out)


# -- host syncs ------------------------------------------------------------------------------


class HostReads:
    """Counts the tensor methods that make the host wait for a GPU, and numpy -> device copies."""

    READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist")

    def __enter__(self):
        self.reads, self.copies, self.saved = 0, 0, {}
        for name in self.READS:
            self.saved[name] = torch.Tensor.__dict__.get(name)  # None: inherited from the C base class
            setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))
        self.as_tensor = torch.as_tensor

        def as_tensor(data, *args, **kwargs):
            if not torch.is_tensor(data) and kwargs.get("device") is not None:
                self.copies += 1
            return self.as_tensor(data, *args, **kwargs)

        torch.as_tensor = as_tensor
        return self

    def _counted(self, original):
        def counted(tensor, *args, **kwargs):
            self.reads += 1
            return original(tensor, *args, **kwargs)

        return counted

    def __exit__(self, *exc):
        torch.as_tensor = self.as_tensor
        for name, original in self.saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def syncs_per_step(job, store, overrides, **kwargs):
    """(host reads, numpy -> device copies) per step of ``job``: runs of 9 and 1 steps, difference / 8."""
    counts = {}
    for steps in (1, 9):
        with tempfile.TemporaryDirectory() as tmp, HostReads() as counter:
            job(store, BENCH, Path(tmp) / "run", overrides=[*overrides, f"run.max_steps_per_epoch={steps}"],
                log=quiet, **kwargs)
        counts[steps] = (counter.reads, counter.copies)
    return tuple((counts[9][i] - counts[1][i]) / 8 for i in range(2))


def host_syncs(store):
    six = TINY + ["optim.epochs=1"]
    rows = {"teacher phase 1": syncs_per_step(jobs.pretrain, store, six + ["model.cross_epoch=150"]),
            "teacher phase 2": syncs_per_step(jobs.pretrain, store, six + ["model.cross_epoch=0"])}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher"
        jobs.pretrain(store, BENCH, teacher, overrides=six + ["run.max_steps_per_epoch=1"], log=quiet)
        rows["student"] = syncs_per_step(jobs.distill, store, six, teacher=teacher / "last.pt")
    return rows


# -- several CPU processes (gloo) ---------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank, world, port, store, run, overrides, threads):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    jobs.pretrain(store, BENCH, run, overrides=overrides, log=quiet)


def gloo_rate(store, processes, overrides):
    """Samples/s of the second epoch of ``ikem-train pretrain`` on ``processes`` CPU processes."""
    import torch.multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // processes)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        if processes == 1:
            torch.set_num_threads(threads)
            jobs.pretrain(store, BENCH, run, overrides=overrides, log=quiet)
        else:
            mp.start_processes(_gloo_worker, args=(processes, _free_port(), store, run, overrides, threads),
                               nprocs=processes, start_method="spawn")
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return last["samples_per_s"], threads


# -- through the loop, on the device ------------------------------------------------------------


def loop_rate(store, model, batch, queue, device, compile_, steps, workers, teacher=None):
    """(samples/s, peak GPU GiB) of the second epoch (the first warms up and compiles)."""
    overrides = [f"data.batch_size={batch}", f"model.queue_size={queue}", f"distill.queue_size={queue}",
                 f"data.num_workers={workers}", f"run.device={device.type}", "run.progress=false",
                 f"run.max_steps_per_epoch={steps}", "optim.epochs=2", f"run.compile={str(compile_).lower()}"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        if model == "student":
            jobs.distill(store, BENCH, run, teacher=teacher, overrides=overrides, log=quiet)
        else:
            phase = "model.cross_epoch=150" if model == "teacher-phase1" else "model.cross_epoch=0"
            jobs.pretrain(store, BENCH, run, overrides=overrides + [phase], log=quiet)
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return last["samples_per_s"], last.get("gpu_memory_peak_gib", float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="loading,training,syncs,gloo", help="what to measure (see above)")
    parser.add_argument("--samples", type=int, default=1024, help="synthetic training samples in the store")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queue", type=int, default=None, help="queue size K (default: 16 x batch)")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to measure")
    parser.add_argument("--modalities", default="joint", help="training and gloo sections")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--persons", type=int, default=1, help="stacked section: body slots M of the input")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--loop", default="teacher-phase1,teacher-phase2,student", help="models of the loop section")
    parser.add_argument("--loop-steps", type=int, default=20, help="steps per epoch in the loop section")
    parser.add_argument("--compile", default="off,on", help="loop section: off, on or both")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    device = resolve_device(args.device)
    modalities = resolve_modalities(args.modalities)
    queue = args.queue or 16 * args.batch
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_store(Path(tmp) / "bench.zarr", n_train=args.samples, n_val=8, frames=50, persons=2,
                                      modalities=["joint"])
        print(f"store: {args.samples} synthetic samples (3, 50, 25, 2) float32, batch {args.batch}, device {device}, "
              f"{torch.get_num_threads()} torch threads")
        loads = {}
        if "loading" in sections:
            batches = args.samples // args.batch - 1
            for workers in (int(w) for w in args.workers.split(",")):
                loads[workers] = loading_rate(store, args.batch, workers, batches)
                print(f"loading, {workers} workers: {loads[workers]:10.0f} samples/s")
        if "training" in sections:
            train = training_rate(store, args.batch, modalities, device, args.steps)
            print(f"training ({', '.join(modalities)}): {train:10.1f} samples/s")
            if loads:
                best = max(loads.values())
                verdict = "loading keeps up" if best >= 10 * train else "LOADING LIMITS the run"
                print(f"loading / training = {best / train:.1f}x (target >= 10x): {verdict}")
        if "stacked" in sections:
            peak = dense_conv_gflops(device)
            print(f"one training step, batch {args.batch}, {args.persons} body slot(s), {args.steps} timed steps; "
                  f"dense 9x1 convolution on this device: {peak:.0f} GFLOP/s")
            print(f"  {'model':22s} {'one by one':>12s} {'stacked':>12s} {'speed-up':>9s} {'GFLOP/sample':>13s} "
                  f"{'ceiling':>13s}")
            for name, alone, stacked, flops in stacked_rates(args.batch, args.persons, device, args.steps):
                print(f"  {name:22s} {alone:8.1f} /s   {stacked:8.1f} /s   {stacked / alone:7.2f}x {flops:13.2f} "
                      f"{peak / flops:9.1f} /s", flush=True)
        if "umurl" in sections:
            print(f"one training step, batch {args.batch}, {args.persons} body slot(s), {args.steps} timed steps, "
                  f"device {device}, {torch.get_num_threads()} torch threads")
            print(f"  {'model':28s} {'parameters (trained / all)':>28s} {'samples/s':>10s} {'GFLOP/sample':>13s}")
            for name, trained, total, rate, flops in umurl_rows(args.batch, args.persons, device, args.steps):
                print(f"  {name:28s} {trained / 1e6:12.2f} M / {total / 1e6:8.2f} M {rate:10.1f} {flops:13.2f}",
                      flush=True)
        if "kernels" in sections:
            torch_ms, ours_ms = dropout_ms(device)
            print(f"dropout on (64, 16, 50, 25): torch nn.Dropout {torch_ms:.1f} ms, ikem Dropout {ours_ms:.1f} ms "
                  f"({torch_ms / ours_ms:.1f}x)")
        if "syncs" in sections:
            print("host syncs per training step (CPU count; each a wait for the GPU on CUDA):")
            for name, (reads, copies) in host_syncs(store).items():
                print(f"  {name:16s} {reads:5.1f} tensor reads, {copies:5.1f} numpy -> device copies")
        if "gloo" in sections:
            overrides = [f"data.batch_size={args.batch}", f"model.queue_size={queue}", "data.num_workers=0",
                         "run.device=cpu", "run.progress=false", f"model.modalities=[{','.join(modalities)}]",
                         f"run.max_steps_per_epoch={args.steps}", "optim.epochs=2"]
            rates = {}
            for processes in (1, 2):
                rates[processes], threads = gloo_rate(store, processes, overrides)
                versus = "(baseline)" if processes == 1 else f"{rates[processes] / rates[1]:5.2f}x one process"
                print(f"pretrain ({', '.join(modalities)}), {processes} CPU process(es) x {threads} thread(s): "
                      f"{rates[processes]:8.1f} samples/s  {versus}")
        if "loop" in sections:
            workers = max(int(w) for w in args.workers.split(","))
            teacher = None
            print(f"through the training loop: batch {args.batch}, K {queue}, {workers} loader workers, "
                  f"{args.loop_steps} steps per epoch, second epoch timed")
            for compile_ in [c == "on" for c in args.compile.split(",")]:
                for model in args.loop.split(","):
                    if model == "student" and teacher is None:  # a six-modality teacher to distil from
                        teacher = Path(tmp) / "teacher"
                        jobs.pretrain(store, BENCH, teacher, log=quiet, overrides=[
                            f"data.batch_size={args.batch}", f"model.queue_size={queue}", "run.progress=false",
                            f"run.device={device.type}", f"data.num_workers={workers}", "run.max_steps_per_epoch=1",
                            "optim.epochs=1"])
                    rate, peak = loop_rate(store, model, args.batch, queue, device, compile_, args.loop_steps,
                                           workers, teacher=teacher and teacher / "last.pt")
                    print(f"  {model:16s} compile {'on ' if compile_ else 'off'}: {rate:8.1f} samples/s, "
                          f"peak GPU memory {peak:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
