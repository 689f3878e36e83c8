"""Multi-process training with ``torch.distributed``, started by ``torchrun`` (DESIGN.md §8).

``torchrun --standalone --nproc-per-node 4 -m ikem_train pretrain ...`` starts one process
per device; each reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``
from its environment. A job opens a :func:`session`, which joins the process group (NCCL
on CUDA, gloo on CPU, with a timeout so that no collective waits forever) and makes the
rank's :class:`DistEnv` available to the training loop through :func:`current`. Without
torchrun everything here is the identity: one process, no process group, the same code.

What is shared between ranks, and how:

- keys and teacher embeddings: :func:`all_gather_cat`, in rank order, so every rank
  enqueues the same global batch and holds the same queues as one process would;
- BatchNorm statistics: :func:`ikem_train.training.sync_bn.convert_sync_batchnorm` (torch's SyncBatchNorm on CUDA;
  on CPU :class:`CPUSyncBatchNorm`, because torch's refuses CPU tensors), so a batch is
  normalised as one process would normalise the global batch;
- gradients: ``DistributedDataParallel`` (:func:`wrap`), with no per-step buffer
  broadcast: queues, pointers and key encoders are updated identically on every rank;
- outcomes: rank 0 alone writes the run folder and tells the others whether it could
  (:func:`agree_with_main`); a rank that fails records its message in the process
  group's store, and the ranks whose collectives then break raise :class:`PeerFailure`
  with that message instead of a socket error.
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ikem_train.checkpoint import seed_everything
from ikem_train.config import ConfigError

BACKENDS = ("auto", "nccl", "gloo")


class DistributedError(RuntimeError):
    """A multi-process launch cannot work (devices, backend) or lost its peers; the message says why."""


class PeerFailure(RuntimeError):
    """Another rank failed first; the message is that rank's."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job.

    Attributes:
        rank, world_size: global rank and number of processes (0 and 1 without torchrun).
        local_rank, local_world_size: the same on this node.
        device: this rank's device; None in a single process (the caller resolves ``run.device``).
        backend: ``"nccl"`` or ``"gloo"``; None in a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device | None = None
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes files and logs."""
        return self.rank == 0

    def main_only(self, log):
        """``log`` on rank 0, a function that prints nothing on the other ranks."""
        return log if self.is_main else (lambda *args, **kwargs: None)


SINGLE = DistEnv()
_active: DistEnv | None = None
_sessions = 0  # sessions opened in this process: the namespace of their store keys


def launch_env() -> DistEnv:
    """The ranks torchrun set in the environment (a single process when it set none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistEnv(rank=int(os.environ.get("RANK", "0")), world_size=world,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def current() -> DistEnv:
    """The :class:`DistEnv` of the open :func:`session`, or :data:`SINGLE` outside one."""
    return _active if _active is not None else SINGLE


def world_size() -> int:
    """Processes in the default group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_batch_size(global_batch: int, world: int) -> int:
    """Each rank's share of ``data.batch_size``, the global batch.

    Raises:
        ConfigError: ``global_batch`` is not divisible by ``world``.
    """
    if global_batch % world:
        raise ConfigError(f"data.batch_size={global_batch} is the global batch, split evenly over the {world} "
                          f"processes; it is not divisible by {world}: choose a multiple of {world}")
    return global_batch // world


def _device(requested: str, env: DistEnv) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` or ``cpu``.

    Raises:
        DistributedError: CUDA asked for without CUDA; more processes on this node than GPUs.
    """
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise DistributedError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if requested == "cpu" or not cuda:
        return torch.device("cpu")
    gpus = torch.cuda.device_count()
    if env.local_world_size > gpus:
        raise DistributedError(f"torchrun started {env.local_world_size} processes on this node but it has {gpus} "
                               f"GPU(s); use --nproc-per-node {gpus} (one process per GPU)")
    return torch.device("cuda", env.local_rank)


def _backend(requested: str, device: torch.device) -> str:
    """``auto``: NCCL on CUDA, gloo on CPU.

    Raises:
        DistributedError: NCCL without CUDA (or with ``--device cpu``).
    """
    if requested not in BACKENDS:
        raise DistributedError(f"run.backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        why = "this machine has no CUDA device" if not torch.cuda.is_available() else "the device is the CPU"
        raise DistributedError(f"run.backend=nccl needs CUDA but {why}; use run.backend=gloo (or auto)")
    return requested


@contextmanager
def session(device: str = "auto", backend: str = "auto", timeout_s: float = 600):
    """Join the job's process group for the ``with`` block and yield this rank's :class:`DistEnv`.

    Without torchrun (``WORLD_SIZE`` unset or 1) it yields a single-process env and joins
    nothing. A process group that exists already (a caller's) is used and left open;
    one this function starts is destroyed on exit. On a normal exit every rank waits for
    the others (rank 0 may still be writing the last checkpoint). On an error the rank
    records it in the group's store, and an error that is only the echo of another
    rank's failure (a broken collective) becomes :class:`PeerFailure` with that rank's
    message.

    Args:
        device: ``run.device`` (auto, cpu, cuda). backend: ``run.backend`` (auto, nccl, gloo).
        timeout_s: the process group's timeout: a collective that waits longer fails.

    Raises:
        DistributedError: see :func:`_device` and :func:`_backend` (raised before joining,
            identically on every rank, so none waits for the others).
    """
    global _active, _sessions
    env = launch_env()
    owned = False
    if dist.is_available() and dist.is_initialized():
        env = DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env.local_rank,
                      local_world_size=env.local_world_size)
    if env.enabled:
        dev = _device(device, env)
        name = dist.get_backend() if dist.is_initialized() else _backend(backend, dev)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_s))
            owned = True
        env = DistEnv(env.rank, env.world_size, env.local_rank, env.local_world_size, dev, name)
    previous, _active = _active, env
    _sessions += 1
    prefix = f"ikem/session{_sessions}"
    watching = watch_launcher(env.rank) if owned else None
    try:
        yield env
        if env.enabled:  # the others wait for rank 0's last writes, so that a next job finds them
            if env.backend == "nccl":
                dist.barrier(device_ids=[env.device.index])
            else:
                dist.barrier()
    except Exception as exc:
        if not env.enabled:
            raise
        echo = _after_failure(env, exc, prefix)
        if echo is exc:
            raise
        raise echo from None
    finally:
        _active = previous
        if watching is not None:
            watching.set()
        if owned:
            try:
                dist.destroy_process_group()
            except Exception:  # a group broken by a failed peer cannot always be torn down cleanly
                pass


def watch_launcher(rank: int, interval_s: float = 1.0, grace_s: float = 10.0) -> threading.Event:
    """Stop this rank, as a Ctrl-C would, when its launcher is gone; set the returned event to stop watching.

    torchrun's agent is every rank's parent. Killed (``kill -9``), it cannot stop them, and
    the ranks still have each other: they trained to the end with nobody to collect them.
    An orphan is re-parented (to init or a subreaper), so a changed ``os.getppid()`` means the
    launcher is gone: the rank says so on stderr and raises SIGINT in itself, which ends the
    job through its usual Ctrl-C path (the last finished epoch's checkpoint is kept;
    checkpoints are written atomically, so no moment is unsafe). Where SIGINT is not
    Python's (a background job inherits it ignored), or the rank is still running
    ``grace_s`` later, it exits at once (status 130; a SIGALRM a few seconds later ends it
    where even that thread cannot run): under ``torchrun --standalone`` the
    rendezvous store lived in the launcher, so a rank whose peer left first can wait on
    it in a collective or in the failure report until the process-group timeout.
    """
    parent, stop = os.getppid(), threading.Event()

    def watch():
        while not stop.wait(interval_s):
            if os.getppid() == parent:
                continue
            sys.stderr.write(f"rank {rank}: the torchrun launcher (pid {parent}) is gone; stopping this rank\n")
            sys.stderr.flush()
            if signal.getsignal(signal.SIGALRM) is signal.SIG_DFL:
                # the backstop the kernel carries out: a main thread stuck in C code while
                # holding the GIL (a collective, or destroy_process_group on the lost store)
                # would keep this thread from ever reaching os._exit
                signal.alarm(int(grace_s) + 5)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.raise_signal(signal.SIGINT)  # handled in the main thread: KeyboardInterrupt
                # not stop.wait: the session's teardown sets stop and then can hang in
                # destroy_process_group on the launcher's lost store; a rank that ends sooner
                # ends this daemon thread with it
                time.sleep(grace_s)
            os._exit(130)

    threading.Thread(target=watch, name="ikem-launcher-watch", daemon=True).start()
    return stop


def _is_comm_error(exc: BaseException) -> bool:
    # gloo and NCCL report a broken or timed-out collective as a bare RuntimeError or a
    # DistError; ikem's own errors are subclasses with a message written for users.
    return type(exc) is RuntimeError or isinstance(exc, getattr(dist, "DistError", ()))


def _after_failure(env: DistEnv, exc: Exception, prefix: str) -> Exception:
    """Record ``exc`` as this rank's failure; return what to raise (``exc``, or the first
    failing rank's message as :class:`PeerFailure` when ``exc`` is only its echo)."""
    if isinstance(exc, PeerFailure):
        return exc
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        store = dist.distributed_c10d._get_default_store()
        if store.add(f"{prefix}/failures", 1) == 1:
            store.set(f"{prefix}/first", json.dumps({"rank": env.rank, "message": first_line}))
            first = None
        else:
            first = _wait_for(store, f"{prefix}/first", seconds=10)
    except Exception:  # the store lived in a process that is gone (rank 0 without torchrun)
        first = None
    if first is not None and _is_comm_error(exc) and first["rank"] != env.rank:
        return PeerFailure(f"rank {first['rank']} failed: {first['message']}")
    if _is_comm_error(exc):
        return DistributedError(f"rank {env.rank} lost contact with the other processes ({first_line}); another "
                                "process stopped or hangs: its own output says why")
    return exc


def _wait_for(store, key: str, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store.check([key]):
            return json.loads(store.get(key))
        time.sleep(0.05)
    return None


def agree_with_main(env: DistEnv, error: BaseException | None = None) -> None:
    """Rank 0 tells the others whether a step it did alone (taking the run folder) worked.

    Call it on every rank: rank 0 passes its error (or None), the others raise
    :class:`PeerFailure` with rank 0's message when it had one. No-op in one process.
    """
    if not env.enabled:
        return
    box = [None if error is None else str(error)]
    dist.broadcast_object_list(box, src=0)
    if not env.is_main and box[0] is not None:
        raise PeerFailure(f"rank 0 failed: {box[0]}")


# -- collectives (identity in one process) ------------------------------------------------


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (no gradient).

    Args:
        tensor: (B, ...) with the same shape on every rank.

    Returns:
        (world·B, ...): rank 0's rows first; ``tensor`` itself in one process.
    """
    world = world_size()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    out = tensor.new_empty((world * tensor.shape[0],) + tuple(tensor.shape[1:]))
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the new name first
    gather(out, tensor)
    return out


def all_gather_rows(values: torch.Tensor) -> torch.Tensor:
    """(n,) on every rank -> (world, n), row r from rank r; ``values[None]`` in one process."""
    return all_gather_cat(values[None])


def gather_objects(obj, env: DistEnv) -> list | None:
    """Every rank's picklable ``obj``, in rank order, on rank 0 (None on the others)."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


@torch.no_grad()
def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (once, at the start)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def seed_rank(seed: int, env: DistEnv) -> None:
    """Give ranks >= 1 their own python/numpy/torch random streams (dropout), from (seed, rank).

    Rank 0 keeps the stream of a single process. Call it after the model is built: the
    weights come from the common seed (and are broadcast from rank 0 anyway).
    """
    if env.rank == 0:
        return
    seed_everything(int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, env.rank]).generate_state(1)[0]))


# -- DistributedDataParallel --------------------------------------------------------------


def wrap(model: nn.Module, env: DistEnv, *, find_unused: bool = False) -> nn.Module:
    """``model`` for training on ``env``: itself in one process, else DDP over it.

    DDP averages the gradients; it does not broadcast buffers each step (the queues are
    large and every rank updates them identically), so rank 0's state is copied to the
    others once, here.

    Args:
        model: on ``env.device`` already (its BatchNorms converted by
            :func:`ikem_train.training.sync_bn.convert_sync_batchnorm` when they are to be synchronized).
        find_unused: some parameters get no gradient in a step (IKEM's heads in phase
            1); DDP then looks for them after each forward (one walk of the autograd
            graph), and leaves their gradient None, as one process would.
    """
    if not env.enabled:
        return model
    kwargs = dict(find_unused_parameters=find_unused)
    if env.device.type == "cuda":
        kwargs["device_ids"] = [env.device.index]
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters:
        kwargs["forward_sync_buffers"] = False  # newer torch: still syncs the state once, at construction
    else:
        broadcast_state(model)
        kwargs["broadcast_buffers"] = False
    return nn.parallel.DistributedDataParallel(model, **kwargs)


# -- torchrun's error summary ---------------------------------------------------------------


def record_error_for_torchrun(message: str) -> None:
    """Write ``message`` where torchrun looks for a worker's error (``TORCHELASTIC_ERROR_FILE``),
    so its failure summary shows ikem's one line instead of "To enable traceback see ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as fh:
            json.dump({"message": {"message": message, "extraInfo": {
                "py_callstack": message, "timestamp": str(int(time.time()))}}}, fh)
    except OSError:
        pass
