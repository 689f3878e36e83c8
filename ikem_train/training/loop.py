"""The pretraining / distillation loop: one function, read top to bottom (METHOD.md §6.5, §7).

``train`` drives any module with the forward contract
``model(**{name: batch[name] for name in model.inputs}, epoch=epoch) -> {"loss": ..., "loss/<part>": ...}``
(PretrainModel and DistillModel take ``view1, view2, frames``; FinetuneModel ``view1, frames, label``;
UmURLModel ``view1 … view4``):
SGD with a step schedule that is a plain function of the 1-based epoch (or the model's own
``make_optimizer(params, cfg)`` and ``lr_at_epoch(epoch, cfg)``, UmURL's Adam and warm-up), full batches
(drop_last), bf16 autocast on CUDA only, optional ``torch.compile``, tqdm progress,
``metrics.jsonl`` (and TensorBoard when asked and installed), atomic checkpoints
(``last.pt`` every epoch, ``epoch<NNN>.pt`` every ``save_interval``) and exact resume.

Under torchrun the same loop runs on every rank (DDP, :mod:`ikem_train.training.distributed`);
rank 0 alone writes the run folder.

Run folders: a new run needs an empty or absent folder; ``resume=True`` continues the
``last.pt`` there (or restarts a run interrupted before its first checkpoint). One
process writes a run folder at a time (:func:`run_folder`). Nothing in a run folder is
deleted, except ``metrics.jsonl`` records of an epoch whose checkpoint an interruption
lost, and, with ``run.keep_last: N``, periodic checkpoints older than the newest N.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import yaml

from ikem_data.locks import exclusive
from ikem_data.quoting import quote
from ikem_train.training import distributed, sync_bn
from ikem_train.checkpoint import atomic_file, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ikem_train.config import EXECUTION_KEYS, Config, config_to_dict
from ikem_train.data.datasets import make_loader


class TrainingError(RuntimeError):
    """A run cannot start or continue (NaN loss, run-folder misuse, config mismatch on resume)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU raises TrainingError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def lr_at(epoch: int, base_lr: float, milestones, gamma: float = 0.1) -> float:
    """Step schedule: ``base_lr * gamma ** #(milestones m with epoch > m)`` (1-based epoch).

    With milestones [250], epochs 1..250 use ``base_lr`` and 251.. use ``base_lr * gamma``.
    """
    return base_lr * gamma ** sum(1 for m in milestones if epoch > m)


def prepare_run_dir(run_dir, resume: bool, resumable: bool = True) -> Path:
    """Check the run folder: absent/empty for a new run; for a resume, a run of ours.

    A run interrupted before its first checkpoint holds ``config.yaml`` but no ``last.pt``:
    ``--resume`` restarts it from epoch 1 (there is nothing to lose); a new run refuses it.
    Call it inside :func:`run_folder`, which holds the folder's lock.

    Raises:
        TrainingError: ``run_dir`` is a file; a non-empty folder without ``--resume``
            (nothing is overwritten; ``resumable=False`` for evaluations, which have no
            ``--resume``, leaves that hint out); ``--resume`` on a folder no run wrote.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--run-dir {run_dir} is a file, not a folder; choose a folder path")
    if resume:
        if not (run_dir / "last.pt").is_file() and not (run_dir / "config.yaml").is_file():
            raise TrainingError(f"--resume: {run_dir} holds no run to continue (no last.pt, no config.yaml)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not resumable:  # an evaluation: nothing to continue
            raise TrainingError(f"run folder {run_dir} is not empty; choose a new --run-dir folder")
        hint = (" (a run interrupted before its first checkpoint: --resume starts it again)"
                if not (run_dir / "last.pt").exists() and (run_dir / "config.yaml").exists() else "")
        raise TrainingError(
            f"run folder {run_dir} is not empty{hint}; pass --resume to continue it or choose a new --run-dir folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@contextmanager
def run_folder(run_dir, resume: bool = False, log=print, resumable: bool = True):
    """Hold the run folder's write lock (:func:`ikem_data.locks.exclusive`), check it with
    :func:`prepare_run_dir` and yield its path; the lock is released on exit.

    Under torchrun rank 0 alone locks and checks the folder (it is the one writer); the
    other ranks wait for its outcome and stop with its error when it had one.

    Raises:
        LockedError: another process is writing the folder; TrainingError: see
            :func:`prepare_run_dir`; PeerFailure: (ranks >= 1) rank 0 could not take it.
    """
    env = distributed.current()
    if not env.is_main:
        distributed.agree_with_main(env)
        yield Path(run_dir)
        return
    with ExitStack() as held:
        try:
            held.enter_context(exclusive(run_dir, "run folder", log))
            path = prepare_run_dir(run_dir, resume, resumable)
        except Exception as exc:
            distributed.agree_with_main(env, exc)
            raise
        distributed.agree_with_main(env)
        yield path


def _keep_metrics_until(path: Path, epoch: int) -> None:
    """Drop records of epochs after ``epoch`` (written before an interruption lost their checkpoint)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not _epoch_of(line) > epoch]
    if len(kept) != len(lines):
        with atomic_file(path, "w") as fh:
            fh.write("".join(line + "\n" for line in kept))


def _epoch_of(line: str) -> float:
    """The ``epoch`` of a metrics line; -inf for a line that is not a record with a whole-number
    epoch (an edit, a torn last line): it is kept as it is, never a traceback on resume."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
        return float("-inf")
    value = record.get("epoch") if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else float("-inf")


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line (a finished line per call; earlier lines are never rewritten)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _same_sections(saved: dict, now: dict, sections) -> list[str]:
    diffs = []
    for section in sections:
        old, new = saved.get(section, {}), now.get(section, {})
        for key in sorted((set(old) | set(new)) - EXECUTION_KEYS):
            if old.get(key) != new.get(key):
                diffs.append(f"{section}.{key}: checkpoint {quote(old.get(key))}, now {quote(new.get(key))}")
    return diffs


def train(model, dataset, cfg: Config, run_dir, *, kind: str, modalities, extra: dict | None = None,
          resume: bool = False, epoch_end=None, log=print) -> dict:
    """Train ``model`` on ``dataset`` for ``cfg.optim.epochs`` epochs, checkpointing in ``run_dir``.

    Under torchrun (inside :func:`ikem_train.training.distributed.session`) every rank calls it with
    the same arguments: each trains its share of the global batch ``data.batch_size``
    through DDP (synchronized BatchNorm unless ``run.sync_bn: false``); rank 0 alone logs,
    runs ``epoch_end`` and writes the run folder. Checkpoints hold every rank's RNG states
    and the world size; a resume needs the same world size.

    The step never waits for the device: loss parts are summed on the device and read
    every ``run.log_interval`` steps and at the epoch end (with the check for a
    non-finite loss, which still stops before any checkpoint of the bad weights).

    Args:
        model: nn.Module with the forward contract (see module docstring).
        dataset: a :class:`ikem_train.data.datasets.PretrainDataset` (or any batch dataset giving
            ``index`` and the entries named by ``model.inputs``).
        cfg: the run config (data, optim, run sections are used).
        run_dir: run folder (see :func:`prepare_run_dir`; call it first).
        kind: ``"pretrain"``, ``"distill"`` or ``"finetune"``, stored in the checkpoint.
        modalities: names stored in the checkpoint (the model's streams).
        extra: more entries for each checkpoint (e.g. the teacher path).
        resume: continue from ``run_dir/last.pt`` (model, optimizer, epoch, step, RNG).
        epoch_end: optional ``f(epoch, model) -> dict`` run after each epoch on rank 0
            (e.g. a val evaluation); its entries join the epoch's metrics record.
        log: a print-like function for one-line messages (used on rank 0 only).

    Returns:
        the last epoch's metrics record.

    Raises:
        TrainingError: non-finite loss (the message gives epoch and step and the last good
            checkpoint, which is left as it was), non-finite weights, or a resume whose
            model config or world size differs.
        ConfigError: a global batch not divisible by the number of processes.
    """
    run_dir = Path(run_dir)
    env = distributed.current()
    log = env.main_only(log)
    device = env.device or resolve_device(cfg.run.device)
    distributed.local_batch_size(cfg.data.batch_size, env.world_size)  # an uneven split is refused
    plain_cfg = config_to_dict(cfg)
    model.to(device)
    shuffle_gen = torch.Generator().manual_seed(cfg.data.seed)  # the same global order on every rank
    loader, sampler = make_loader(
        dataset, cfg.data.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
        generator=shuffle_gen, pin_memory=cfg.data.pin_memory and device.type == "cuda",
        max_batches=cfg.run.max_steps_per_epoch, rank=env.rank, world_size=env.world_size,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    # A model may bring its own optimizer and lr schedule (UmURL: Adam, lr_at_epoch); the default is
    # SGD with the step schedule of the optim section.
    if hasattr(model, "make_optimizer"):
        opt = model.make_optimizer(params, cfg)
        schedule = model.lr_at_epoch
    else:
        opt = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                              weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)

        def schedule(epoch, cfg):
            return lr_at(epoch, cfg.optim.lr, cfg.optim.milestones, cfg.optim.gamma)
    compared = ("model", "distill") if kind == "distill" else ("model", "umurl") if cfg.model.method == "umurl" \
        else ("model",)
    start_epoch, step = 1, 0
    if resume and not (run_dir / "last.pt").is_file():
        log(f"{run_dir} has no checkpoint yet (interrupted in its first epoch): starting it again from epoch 1")
        resume = False
        if env.is_main:
            _keep_metrics_until(run_dir / "metrics.jsonl", 0)
    if resume:
        ck = load_checkpoint(run_dir / "last.pt", kind=kind, resume=True)
        diffs = _same_sections(ck["config"], plain_cfg, compared)
        diffs += _same_sections({"data": {"batch_size": ck["config"]["data"]["batch_size"]}},
                                {"data": {"batch_size": cfg.data.batch_size}}, ("data",))
        if diffs:
            raise TrainingError("cannot resume with a different model config: " + "; ".join(diffs))
        saved_world = ck.get("world_size", 1)
        if saved_world != env.world_size:
            raise TrainingError(f"cannot resume {run_dir} with {env.world_size} process(es): it was trained with "
                                f"{saved_world}, and each one's random streams and share of the batch are in its "
                                f"checkpoint; resume it with {saved_world} process(es)")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = ck["epoch"] + 1, ck["step"]
        if env.is_main:
            _keep_metrics_until(run_dir / "metrics.jsonl", ck["epoch"])
        set_rng_state(ck["rng_ranks"][env.rank] if env.enabled else ck["rng"], shuffle_gen)
        log(f"resuming {run_dir} after epoch {ck['epoch']} (step {step})")
    else:
        if env.is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(plain_cfg, sort_keys=False))
        distributed.seed_rank(cfg.data.seed, env)  # dropout differs across ranks, as across one batch

    if env.enabled and cfg.run.sync_bn:
        sync_bn.convert_sync_batchnorm(model, device)  # BatchNorm over the global batch, as one process
    skips = getattr(model, "skips_parameters", lambda epoch: False)
    forward, wrapped_for = None, None
    amp = device.type == "cuda" and cfg.run.amp
    writer = _tensorboard(run_dir, log) if cfg.run.tensorboard and env.is_main else None
    progress = _progress(cfg.run.progress and env.is_main)
    record = {}
    last_good = run_dir / "last.pt"
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        lr = schedule(epoch, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        unused = skips(epoch)
        # DDP walks the autograd graph for unused parameters only in a phase that has some
        # (IKEM's phase 1): a new wrapper when the phase changes that. The old one is
        # dropped first, with its gradient hooks (and any compiled code that holds it).
        if forward is None or (env.enabled and unused != wrapped_for):
            if forward is not None and cfg.run.compile:
                torch._dynamo.reset()
            forward = None
            forward = distributed.wrap(model, env, find_unused=unused)
            forward, wrapped_for = (torch.compile(forward) if cfg.run.compile else forward), unused
        sampler.set_epoch(epoch)
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        meter, count, t0 = LossMeter(device), 0, time.perf_counter()
        bar = progress(loader, desc=f"{kind} epoch {epoch}/{cfg.optim.epochs}", leave=False)
        for i, batch in enumerate(bar, start=1):
            # e.g. view1, view2 (B, 3, T, 25, M), frames (B,): the entries the model names
            inputs = {name: batch[name].to(device, non_blocking=True) for name in model.inputs}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = forward(**inputs, epoch=epoch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            step += 1
            count += len(batch["index"]) * env.world_size
            meter.add(out)
            if i % cfg.run.log_interval == 0:
                means = meter.read(env, epoch, step - i, last_good)
                if hasattr(bar, "set_postfix"):
                    rate = count / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{means['loss']:.4f}", samples_s=f"{rate:.1f}")
        means = meter.read(env, epoch, step - meter.steps, last_good)  # the epoch's means, or TrainingError
        seconds = time.perf_counter() - t0
        record = {"kind": kind, "epoch": epoch, "step": step, "lr": lr, **means,
                  "samples_per_s": count / max(seconds, 1e-9), "seconds": seconds}
        if device.type == "cuda":  # the allocator's own count: no wait for the device
            record["gpu_memory_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        if epoch_end is not None and env.is_main:
            record.update(epoch_end(epoch, model))
        if env.is_main:
            append_jsonl(run_dir / "metrics.jsonl", record)
        if writer is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and name not in ("epoch", "kind"):
                    writer.add_scalar(name, value, epoch)
        phase = model.phase(epoch) if hasattr(model, "phase") else None
        if phase and (epoch == start_epoch or phase != model.phase(epoch - 1)):
            log(f"{kind} {phase}: the loss sums these parts, so its scale changes with the phase")
        parts = ", ".join(f"{name[5:]} {value:.4g}" for name, value in record.items() if name.startswith("loss/"))
        log(f"{kind} epoch {epoch}/{cfg.optim.epochs}: loss {record.get('loss', float('nan')):.5g}"
            + (f" ({parts})" if parts else "") + f", lr {lr:g}, {record['samples_per_s']:.1f} samples/s")
        bad = _non_finite_tensors(model)
        if bad:  # a finite loss can still leave inf/NaN weights (e.g. a huge learning rate)
            kept = f"the last good checkpoint {last_good} is kept" if last_good.is_file() else "no checkpoint was written"
            raise TrainingError(f"non-finite weights after epoch {epoch} ({len(bad)} tensors, e.g. {bad[0]}); "
                                f"stopped before writing them, {kept}; lower optim.lr")
        rngs = distributed.gather_objects(rng_state(shuffle_gen), env)  # every rank's, for an exact resume
        if not env.is_main:
            continue
        payload = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                   "scheduler": {"type": "step", "milestones": list(cfg.optim.milestones),
                                 "gamma": cfg.optim.gamma, "base_lr": opt.defaults["lr"], "last_epoch": epoch},
                   "epoch": epoch, "step": step, "rng": rngs[0], "world_size": env.world_size,
                   **({"rng_ranks": rngs} if env.enabled else {}), "config": plain_cfg,
                   "kind": kind, "modalities": list(modalities), **(extra or {})}
        save_checkpoint(last_good, payload)
        if epoch % cfg.run.save_interval == 0:
            save_checkpoint(run_dir / f"epoch{epoch:03d}.pt", payload)
            if cfg.run.keep_last is not None:  # opt-in retention of the periodic checkpoints
                for old in sorted(run_dir.glob("epoch[0-9][0-9][0-9].pt"))[:-cfg.run.keep_last]:
                    old.unlink()
    if writer is not None:
        writer.close()
    return record


class LossMeter:
    """An epoch's loss parts, summed on the device so that a step never waits for it.

    :meth:`read` is the one place that waits: one collective (every rank's sums) and one
    host read, every ``run.log_interval`` steps and at the epoch end.
    """

    def __init__(self, device):
        self.device = device
        self.sums = {}
        self.steps = 0
        # 1-based step of this epoch's first non-finite loss (0: none yet) and that loss
        self.first_bad = torch.zeros((), dtype=torch.float64, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, out: dict) -> None:
        """Add one step's ``{"loss": ..., "loss/<part>": ...}`` (tensors stay on the device)."""
        self.steps += 1
        for name, part in out.items():
            value = part.detach().to(torch.float64) if torch.is_tensor(part) else float(part)
            self.sums[name] = self.sums.get(name, 0.0) + value
        loss = out["loss"].detach().to(torch.float64)
        newly = (self.first_bad == 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(newly, float(self.steps), self.first_bad)
        self.bad_value = torch.where(newly, loss, self.bad_value)

    def read(self, env, epoch: int, step_before: int, last_good: Path) -> dict:
        """The mean of each part over the steps so far and every rank.

        Args:
            env: the :class:`ikem_train.training.distributed.DistEnv` (every rank must call this).
            epoch, step_before: for the message (global steps before this epoch).
            last_good: the checkpoint the message says is kept.

        Raises:
            TrainingError: a rank saw a non-finite loss; the message names the first step.
        """
        names = list(self.sums)
        local = torch.stack([torch.as_tensor(self.sums[name], dtype=torch.float64, device=self.device)
                             for name in names] + [self.first_bad, self.bad_value])
        rows = distributed.all_gather_rows(local).tolist()  # (world, parts + 2): the host read
        bad = sorted((row[-2], row[-1]) for row in rows if row[-2] > 0)
        if bad:
            at, value = int(bad[0][0]), bad[0][1]
            where = f"epoch {epoch}, step {at} of the epoch (global step {step_before + at})"
            kept = (f"the last good checkpoint {last_good} is kept" if last_good.is_file()
                    else "no checkpoint was written yet")
            raise TrainingError(f"loss became {value} at {where}; stopped, {kept}")
        batches = max(self.steps, 1) * len(rows)
        return {name: sum(row[j] for row in rows) / batches for j, name in enumerate(names)}


def _non_finite_tensors(model) -> list[str]:
    """Names of the floating-point state entries holding inf/NaN (one host read for all)."""
    state = {name: value for name, value in model.state_dict().items() if value.is_floating_point()}
    if not state:
        return []
    finite = torch.stack([torch.isfinite(value).all() for value in state.values()]).tolist()
    return [name for name, ok in zip(state, finite) if not ok]


def _progress(enabled):
    if not enabled:
        return lambda it, **kw: it
    from ikem_data.progress import progress_bar  # a bar on a terminal, a line every 30 s in a log

    return progress_bar


def _tensorboard(run_dir, log):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        log("run.tensorboard is set but tensorboard is not installed (pip install ikem[tensorboard]); skipping it")
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))
