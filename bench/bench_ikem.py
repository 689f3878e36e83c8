"""Seconds per IKEM teacher epoch (six-modality pretraining, phase 2) and per student
epoch (distillation) for an NTU-60-sized training set, on synthetic input.

Times real optimisation steps (forward with the in-model torch modalities, backward,
SGD step, momentum update, enqueue) of PretrainModel and DistillModel at the paper
settings (batch 128, K 32768) and projects them to 40,091 // 128 = 313 steps per epoch.
CUDA runs under bf16 autocast; CPU runs in float32 with few steps.

    python bench/bench_ikem.py                 # auto device
    python bench/bench_ikem.py --device cpu     # ~10 min on 2 cores: one step of each

CPU figures on 2 shared cores (one step each, batch 128): ~210 s per teacher step, ~80 s
per student step, i.e. days per epoch: the CPU is for tests, a GPU for training.

Target (issue 5): at most 60 s per six-modality teacher epoch on one H100; the reference
single-stream AimCLR takes ~51 s per epoch.
"""

import argparse
import time

import torch

from ikem_data.names import MODALITIES
from ikem_train.methods.model import DistillModel, PretrainModel

TARGET_TEACHER_EPOCH_S = 60.0
REFERENCE_AIMCLR_EPOCH_S = 51.0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, batches, frames, epoch, device, steps, warmup, compile_=False):
    """Mean seconds per optimisation step after ``warmup`` untimed steps."""
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                            weight_decay=1e-4)
    step_fn = torch.compile(model) if compile_ else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for i in range(warmup + steps):
        view1, view2 = batches[i % len(batches)]
        sync(device)
        start = time.perf_counter()
        with amp:
            out = step_fn(view1, view2, frames, epoch)
        optim.zero_grad(set_to_none=True)
        out["loss"].backward()
        optim.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(out["loss"]):
            raise SystemExit(f"non-finite loss at step {i}")
    return sum(times) / len(times), float(out["loss"].detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch", type=int, default=128, help="batch size (paper: 128)")
    parser.add_argument("--queue", type=int, default=32768, help="queue size K (paper: 32768)")
    parser.add_argument("--samples", type=int, default=40091, help="training samples per epoch (NTU-60 xsub)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 1 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA, 0 CPU)")
    parser.add_argument("--compile", action="store_true", help="time torch.compile'd models")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    steps = args.steps or (20 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 0)
    steps_per_epoch = args.samples // args.batch  # drop_last
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; precision: {'bf16 autocast' if cuda else 'float32'}")
    print(f"batch {args.batch}, K {args.queue}, {args.samples} samples -> {steps_per_epoch} steps/epoch; "
          f"{warmup} warm-up + {steps} timed steps each\n")

    torch.manual_seed(0)
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [tuple((0.3 * torch.randn(args.batch, 3, 50, 25, 2, generator=gen)).to(device) for _ in range(2))
               for _ in range(2)]
    frames = torch.randint(30, 300, (args.batch,), generator=gen).float().to(device)

    config = dict(modalities=list(MODALITIES), queue_size=args.queue, cross_epoch=150)
    teacher = PretrainModel(**config).to(device)
    rows = []
    for label, epoch in (("teacher phase 1 (6x InfoNCE)", 1), ("teacher phase 2 (cross + IKEM)", 151)):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        sec, loss = time_steps(teacher, batches, frames, epoch, device, steps, warmup, args.compile)
        mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else float("nan")
        rows.append((label, sec, loss, mem))

    student = DistillModel(teacher.state_dict(), config, queue_size=args.queue).to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sec, loss = time_steps(student, batches, frames, 1, device, steps, warmup, args.compile)
    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else float("nan")
    rows.append(("student distillation (3 students)", sec, loss, mem))

    print(f"{'model':36s} {'s/step':>8s} {'samples/s':>10s} {'s/epoch':>9s} {'peak GiB':>9s} {'loss':>8s}")
    for label, sec, loss, mem in rows:
        print(f"{label:36s} {sec:8.3f} {args.batch / sec:10.1f} {sec * steps_per_epoch:9.1f} {mem:9.2f} {loss:8.3f}")
    teacher_epoch = rows[1][1] * steps_per_epoch
    print(f"\nteacher epoch (phase 2): {teacher_epoch:.1f} s; target on one H100 <= {TARGET_TEACHER_EPOCH_S:.0f} s "
          f"(reference single-stream AimCLR ~{REFERENCE_AIMCLR_EPOCH_S:.0f} s)")
    paper = 150 * rows[0][1] + 150 * rows[1][1]
    print(f"projection: teacher 300 epochs = {paper * steps_per_epoch / 3600:.1f} h, "
          f"student 150 epochs = {150 * rows[2][1] * steps_per_epoch / 3600:.1f} h (model compute only, "
          f"data loading excluded)")


if __name__ == "__main__":
    main()
