"""Multi-process training on CPU with gloo (DESIGN.md §8): the same results as one process,
identical state on every rank, exact resume, one writer, failures that end the run, and
the torchrun command lines of the README; plus a step that never reads the device.

Processes are started with ``torch.multiprocessing`` (``start_processes``, spawn) and set
the variables torchrun sets, so the jobs run exactly as under torchrun; the last tests
run ``torchrun`` itself. Each multi-process test stays well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ikem_train.training import distributed, sync_bn
from ikem_train import jobs
from ikem_train.checkpoint import load_checkpoint
from ikem_train.config import ConfigError
from ikem_train.data.datasets import EpochBatchSampler, PretrainDataset, write_synthetic_store
from ikem_train.methods.model import PretrainModel

BENCH = "ntu60-xsub"
# Tiny widths; K = 16 is a multiple of the global batch 8. student_dim = 6 x feature_dim.
TINY = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=16",
        "distill.queue_size=16", "distill.student_dim=48", "data.num_workers=0", "run.device=cpu",
        "run.progress=false", "run.dist_timeout=30"]
# Augmentation off and dropout 0: one process and two see the very same inputs and masks.
SAME_VIEWS = ["data.shear=-1", "data.crop_ratio=-1", "model.dropout=0"]
# 24 samples, global batch 8: 3 steps per epoch; epoch 1 is phase 1, epoch 2 phase 2.
EQUAL = TINY + SAME_VIEWS + ["data.batch_size=8", "optim.epochs=2", "model.cross_epoch=1", "optim.lr=0.1"]
# The equality runs in float64 (parameters, queues, loaded views): split over two processes
# the float32 sums of a batch come out in another order, and the tiny encoders' first steps
# (gradients of ~100 through the normalisation of near-zero embeddings) amplify that
# rounding a thousandfold, to 1e-4 in the loss, which would hide a real difference. In
# float64 what remains is the float32 rounding of the keys and losses, which the models
# compute in float32 by design: measured 2e-13 relative on the weights, 1e-7 on the losses.
ATOL = RTOL = 1e-7  # weights, queues, BatchNorm statistics
LOSS_RTOL = 1e-6  # float32 losses


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("dist") / "s.zarr", n_train=24, n_val=8, frames=12,
                                 persons=1)


# -- starting processes like torchrun ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORTS: list = []  # in a worker: a free port for each job it runs (see _next_job)


def _entry(rank, world, ports, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1")
    PORTS.extend(ports)
    _next_job()
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1: two processes share two cores
    fn(rank, *args)


def _next_job():
    """A fresh rendezvous port for the next job. A job that failed ends without a barrier,
    so its rank 0 may still hold the old port's store when a quicker rank starts the next
    job (under torchrun the processes end with the job, or share the agent's store)."""
    os.environ["MASTER_PORT"] = str(PORTS.pop(0))


def _spawn(fn, *args, world=2, limit=60.0, jobs=1) -> float:
    """Run ``fn(rank, *args)`` in ``world`` fresh processes; returns the seconds it took."""
    t0 = time.monotonic()
    ports = [_free_port() for _ in range(jobs)]
    ctx = mp.start_processes(_entry, args=(world, ports, fn, args), nprocs=world, join=False,
                             start_method="spawn")
    while not ctx.join(timeout=1):
        if time.monotonic() - t0 > limit:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the processes were still running after {limit:.0f} s")
    return time.monotonic() - t0


def _outcome(run):
    """``run()``'s error (type and message), or None when it returns."""
    try:
        run()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _same(a, b) -> bool:
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


# -- recording every step ------------------------------------------------------------------


STEPS: list = []


def _shared_state(model) -> dict:
    """What every rank must hold identically after a step: queues, pointer, key encoders."""
    state = {name: value.detach().clone() for name, value in model.named_buffers() if name.startswith("queue")}
    state["ptr"] = model._ptr
    state.update({name: p.detach().clone() for name, p in model.named_parameters() if name.startswith("key.")})
    return state


def _record_steps(cls):
    """Make ``cls.forward`` append (loss, shared state) to STEPS after each step."""
    original = cls.forward

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        STEPS.append({"loss": out["loss"].detach().clone(), **_shared_state(self)})
        return out

    cls.forward = forward


def _in_float64(patch=setattr):
    """Parameters, queues and the views the loader gives in float64 (see ATOL)."""
    torch.set_default_dtype(torch.float64)
    original = PretrainDataset.__getitem__

    def getitem(self, item):
        return {k: v.double() if v.is_floating_point() else v for k, v in original(self, item).items()}

    patch(PretrainDataset, "__getitem__", getitem)


@pytest.fixture
def float64(monkeypatch):
    _in_float64(monkeypatch.setattr)
    yield
    torch.set_default_dtype(torch.float32)


def _equal_worker(rank, store, root):
    from ikem_train.methods.model import DistillModel

    _in_float64()
    _record_steps(PretrainModel)
    _record_steps(DistillModel)
    jobs.pretrain(store, BENCH, root / "teacher2", overrides=EQUAL, log=_quiet)
    pretrain_steps = list(STEPS)
    STEPS.clear()
    jobs.distill(store, BENCH, root / "student2", teacher=root / "teacher1" / "last.pt",
                 overrides=EQUAL + ["optim.epochs=1"], log=_quiet)
    torch.save({"pretrain": pretrain_steps, "distill": list(STEPS)}, root / f"steps{rank}.pt")


def _single_run(monkeypatch, store, root):
    """The one-process runs (global batch 8) and their steps."""
    from ikem_train.methods.model import DistillModel

    steps = {}
    for cls in (PretrainModel, DistillModel):
        monkeypatch.setattr(cls, "forward", cls.forward)  # undone after the test
        _record_steps(cls)
    jobs.pretrain(store, BENCH, root / "teacher1", overrides=EQUAL, log=_quiet)
    steps["pretrain"] = list(STEPS)
    STEPS.clear()
    jobs.distill(store, BENCH, root / "student1", teacher=root / "teacher1" / "last.pt",
                 overrides=EQUAL + ["optim.epochs=1"], log=_quiet)
    steps["distill"] = list(STEPS)
    STEPS.clear()
    return steps


def test_two_processes_equal_one_with_the_same_global_batch(store, tmp_path, monkeypatch, float64):
    """2 processes x batch 4 == 1 process x batch 8: per-step losses, final weights, queues,
    BatchNorm statistics; and both ranks hold identical queues, pointer and key encoders
    after every step. Pretraining covers phase 1 (IKEM heads unused) and phase 2 (CrosSCLR
    mining and IKEM against the gathered queues); distillation the gathered teacher queues."""
    single = _single_run(monkeypatch, store, tmp_path)
    seconds = _spawn(_equal_worker, store, tmp_path)
    ranks = [torch.load(tmp_path / f"steps{r}.pt") for r in range(2)]
    for job, n_steps in (("pretrain", 6), ("distill", 3)):
        one, two = single[job], [r[job] for r in ranks]
        assert len(one) == len(two[0]) == len(two[1]) == n_steps
        for step in range(n_steps):
            for name, value in two[0][step].items():
                if name != "loss":  # queues, pointer, key encoders: identical on every rank, bit for bit
                    assert _same(value, two[1][step][name]), (job, step, name)
            mean = (two[0][step]["loss"] + two[1][step]["loss"]) / 2  # each rank's loss is its half's mean
            torch.testing.assert_close(mean, one[step]["loss"], atol=0, rtol=LOSS_RTOL, msg=f"{job} step {step}")
            assert two[0][step]["ptr"] == one[step]["ptr"] and _same(two[0][step]["queue_ptr"], one[step]["queue_ptr"])
    for one_run, two_run in (("teacher1", "teacher2"), ("student1", "student2")):
        a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in (one_run, two_run))
        assert a["model"].keys() == b["model"].keys() and b["world_size"] == 2 and a["world_size"] == 1
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], atol=ATOL, rtol=RTOL, msg=key)
        losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                  for run in (one_run, two_run)]
        np.testing.assert_allclose(losses[1], losses[0], atol=0, rtol=LOSS_RTOL)
    assert seconds < 60


# -- synchronized BatchNorm -----------------------------------------------------------------


def _batchnorm_input():
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(8, 5, 6, 4, generator=g)  # (N, C, T, V): an offset mean, as after a ReLU
    weight = torch.randn(8, 5, 6, 4, generator=g)  # d loss / d output
    return x, weight


def _reference_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, momentum=0.3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


def _batchnorm_worker(rank, root):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    x, weight = _batchnorm_input()
    mine = slice(4 * rank, 4 * rank + 4)
    bn = sync_bn.convert_sync_batchnorm(nn.Sequential(_reference_bn()), torch.device("cpu"))[0]
    assert isinstance(bn, sync_bn.CPUSyncBatchNorm)
    out = {}
    for step in range(2):  # twice: running statistics follow BatchNorm's momentum
        xr = x[mine].clone().requires_grad_()
        y = bn(xr)
        (y * weight[mine]).sum().backward()
        out[step] = {"y": y.detach(), "dx": xr.grad, "dw": bn.weight.grad.clone(), "db": bn.bias.grad.clone()}
        bn.weight.grad = bn.bias.grad = None
    out["running"] = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    bn.eval()
    out["eval"] = bn(x[mine]).detach()
    torch.save(out, root / f"bn{rank}.pt")
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_on_the_concatenated_batch(tmp_path):
    """Forward output, input and parameter gradients (summed over ranks, as DDP's average
    is of each rank's mean loss) and running statistics of two halves equal BatchNorm's on
    the whole batch, to float32 rounding (1e-5)."""
    _spawn(_batchnorm_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    x, weight = _batchnorm_input()
    bn = _reference_bn()
    for step in range(2):
        xr = x.clone().requires_grad_()
        y = bn(xr)
        (y * weight).sum().backward()
        got = {key: [ranks[r][step][key] for r in range(2)] for key in ("y", "dx", "dw", "db")}
        torch.testing.assert_close(torch.cat(got["y"]), y.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat(got["dx"]), xr.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["dw"][0] + got["dw"][1], bn.weight.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["db"][0] + got["db"][1], bn.bias.grad, atol=1e-5, rtol=1e-5)
        bn.weight.grad = bn.bias.grad = None
    for r in range(2):
        mean, var, tracked = ranks[r]["running"]
        torch.testing.assert_close(mean, bn.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(var, bn.running_var, atol=1e-6, rtol=1e-6)
        assert tracked == int(bn.num_batches_tracked) == 2
    bn.eval()
    torch.testing.assert_close(torch.cat([ranks[r]["eval"] for r in range(2)]), bn(x).detach())


# -- resume, one writer, refusals ------------------------------------------------------------


class _WriteAudit:
    """Every file write, rename, removal or folder creation under ``root`` (a sys audit hook)."""

    EVENTS = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}

    def __init__(self, root):
        self.root, self.seen = str(root), []
        sys.addaudithook(self)

    def __call__(self, event, args):
        if event == "open":
            path, mode = args[0], args[1] or "r"
            if isinstance(path, (str, bytes, os.PathLike)) and any(c in str(mode) for c in "wax+"):
                self._note(path)
        elif event in self.EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)):
                    self._note(path)

    def _note(self, path):
        path = os.fsdecode(path)
        if os.path.abspath(path).startswith(self.root):
            self.seen.append(path)


def _resume_worker(rank, store, root):
    audit = _WriteAudit(root / "runs")
    runs = root / "runs"
    settings = TINY + ["data.batch_size=8", "model.cross_epoch=1", "run.max_steps_per_epoch=2"]  # dropout, shear on
    jobs.pretrain(store, BENCH, runs / "straight", overrides=settings + ["optim.epochs=2"], log=_quiet)
    jobs.pretrain(store, BENCH, runs / "cut", overrides=settings + ["optim.epochs=1"], log=_quiet)
    jobs.pretrain(store, BENCH, runs / "cut", overrides=settings + ["optim.epochs=2"], resume=True, log=_quiet)
    odd = ["data.batch_size=3", "model.queue_size=24", "distill.queue_size=24"]  # K % 3 == 0, 3 % 2 != 0
    refusals = {}
    _next_job()
    refusals["world size"] = _outcome(lambda: jobs.pretrain(store, BENCH, runs / "one", resume=True, log=_quiet,
                                                            overrides=settings + ["optim.epochs=2"]))
    _next_job()
    refusals["batch"] = _outcome(lambda: jobs.pretrain(store, BENCH, runs / "odd", overrides=settings + odd,
                                                       log=_quiet))
    refusals["run folder"] = _outcome(lambda: jobs.pretrain(store, BENCH, runs / "straight", overrides=settings,
                                                            log=_quiet))
    (root / f"resume{rank}.json").write_text(json.dumps({"writes": audit.seen, "refusals": refusals}))


def test_resume_under_two_processes_is_exact_and_only_rank_0_writes(store, tmp_path):
    """Two epochs straight == one epoch, then --resume for the second, bit for bit (each
    rank's dropout and augmentation streams come back from the checkpoint); rank 1 writes
    nothing under the run folders; another world size, an uneven global batch and a used
    run folder are refused on both ranks, without a hang."""
    runs = tmp_path / "runs"
    one = TINY + ["data.batch_size=8", "model.cross_epoch=1", "run.max_steps_per_epoch=2", "optim.epochs=1"]
    jobs.pretrain(store, BENCH, runs / "one", overrides=one, log=_quiet)  # a one-process run to resume
    assert _spawn(_resume_worker, store, tmp_path, jobs=3) < 60
    a, b = (load_checkpoint(runs / run / "last.pt") for run in ("straight", "cut"))
    assert a["epoch"] == b["epoch"] == 2 and a["world_size"] == 2 and len(b["rng_ranks"]) == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    metrics = [(runs / run / "metrics.jsonl").read_text().splitlines() for run in ("straight", "cut")]
    assert [json.loads(m)["loss"] for m in metrics[0]] == [json.loads(m)["loss"] for m in metrics[1]]
    assert not torch.equal(a["rng_ranks"][0]["torch"], a["rng_ranks"][1]["torch"])  # each rank its own dropout
    reports = [json.loads((tmp_path / f"resume{r}.json").read_text()) for r in range(2)]
    assert reports[1]["writes"] == []
    assert any(path.endswith("last.pt") for path in reports[0]["writes"])
    for report in reports:
        refusals = report["refusals"]
        assert "it was trained with 1" in refusals["world size"] and "with 2 process(es)" in refusals["world size"]
        assert "data.batch_size=3 is the global batch" in refusals["batch"]
        assert "is not empty" in refusals["run folder"]
    assert reports[1]["refusals"]["run folder"].startswith("PeerFailure: rank 0 failed: run folder")
    assert not (runs / "odd").exists()  # refused before anything was written


# -- a failing rank --------------------------------------------------------------------------


class _Broken(RuntimeError):
    pass


def _failure_worker(rank, store, root):
    from ikem_train.training.loop import TrainingError

    if rank == 1:
        original = PretrainModel.forward

        def forward(self, *args, **kwargs):
            if len(STEPS) == 1:
                raise TrainingError("rank one broke on purpose at its second step")
            STEPS.append(None)
            return original(self, *args, **kwargs)

        PretrainModel.forward = forward
    t0 = time.monotonic()
    error = _outcome(lambda: jobs.pretrain(store, BENCH, root / "run", log=_quiet,
                                           overrides=TINY + ["data.batch_size=8", "optim.epochs=2",
                                                             "run.dist_timeout=20"]))
    (root / f"failure{rank}.json").write_text(json.dumps({"error": error, "seconds": time.monotonic() - t0}))


def test_a_failure_on_rank_1_ends_every_rank_with_its_message(store, tmp_path):
    seconds = _spawn(_failure_worker, store, tmp_path)
    reports = [json.loads((tmp_path / f"failure{r}.json").read_text()) for r in range(2)]
    assert reports[1]["error"] == "TrainingError: rank one broke on purpose at its second step"
    assert reports[0]["error"] == "PeerFailure: rank 1 failed: rank one broke on purpose at its second step"
    assert reports[0]["seconds"] < 20 and seconds < 60  # ended by the failure, not by the timeout
    assert not (tmp_path / "run" / "last.pt").exists()


# -- torchrun, as the README gives it ----------------------------------------------------------


def _torchrun(*args, limit=60):
    launcher = Path(sys.executable).with_name("torchrun")
    cmd = [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", "-m", "ikem_train", *args],
                          capture_output=True, text=True, timeout=limit)
    return proc, time.monotonic() - t0


def _sets(*overrides):
    return [arg for item in overrides for arg in ("--set", item)]


CLI_TINY = TINY + ["data.batch_size=4", "optim.epochs=1"]


@pytest.fixture(scope="module")
def torchrun_teacher(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("torchrun") / "teacher"
    proc, seconds = _torchrun("pretrain", "--store", str(store), "--benchmark", BENCH, "--run-dir", str(run),
                              *_sets(*CLI_TINY, "model.cross_epoch=0"))
    return run, proc, seconds


def test_torchrun_pretrain(torchrun_teacher):
    run, proc, seconds = torchrun_teacher
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(f"done: {run}/last.pt") == 1  # rank 0 alone prints
    assert "on 2 processes (gloo)" in proc.stdout
    ck = load_checkpoint(run / "last.pt", kind="pretrain")
    assert ck["world_size"] == 2 and ck["step"] == 24 // 4
    assert seconds < 60


def test_torchrun_distill(torchrun_teacher, store):
    teacher, _, _ = torchrun_teacher
    run = teacher.parent / "student"
    proc, seconds = _torchrun("distill", "--store", str(store), "--benchmark", BENCH, "--teacher",
                              str(teacher / "last.pt"), "--run-dir", str(run), *_sets(*CLI_TINY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_checkpoint(run / "last.pt", kind="distill")["world_size"] == 2
    assert seconds < 60


def test_torchrun_finetune(torchrun_teacher, store):
    teacher, _, _ = torchrun_teacher
    run = teacher.parent / "finetune"
    proc, seconds = _torchrun("finetune", "--store", str(store), "--benchmark", BENCH, "--checkpoint",
                              str(teacher / "last.pt"), "--modalities", "joint,motion", "--run-dir", str(run),
                              *_sets(*CLI_TINY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("fine-tuning of joint + motion") == 1
    results = json.loads((run / "results.json").read_text())
    assert results["train_samples"] == 24 and 0 <= results["final"]["top1"] <= 1
    assert seconds < 60


def test_torchrun_bad_input_is_one_clear_line_and_no_hang(store, tmp_path):
    odd = ["data.batch_size=3", "model.queue_size=24", "distill.queue_size=24"]
    proc, seconds = _torchrun("pretrain", "--store", str(store), "--benchmark", BENCH, "--run-dir",
                              str(tmp_path / "r"), *_sets(*CLI_TINY, *odd))
    assert proc.returncode != 0
    # every rank refuses with the same line; torchrun stops the other ranks as soon as the
    # first exits, so which of them get to print is a race: at least one does, and only that
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors and all("data.batch_size=3 is the global batch, split evenly over the 2 processes" in line
                          for line in errors), proc.stderr
    assert not (tmp_path / "r").exists() and seconds < 60


def _children(pid):
    """The pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the ranks in /proc")
def test_killing_the_torchrun_launcher_stops_every_rank(store, tmp_path):
    launcher = Path(sys.executable).with_name("torchrun")
    cmd = [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    run, log = tmp_path / "r", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([*cmd, "--standalone", "--nproc-per-node", "2", "-m", "ikem_train", "pretrain",
                                 "--store", str(store), "--benchmark", BENCH, "--run-dir", str(run),
                                 *_sets(*CLI_TINY, "optim.epochs=100000")], stdout=subprocess.DEVNULL, stderr=err)
    ranks = []
    try:
        deadline = time.monotonic() + 90
        while not (run / "last.pt").is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (run / "last.pt").is_file(), log.read_text()
        ranks = _children(proc.pid)
        assert len(ranks) == 2, ranks
        proc.kill()  # kill -9: the launcher cannot stop them itself
        proc.wait(timeout=10)
        deadline = time.monotonic() + 40  # noticed within 1 s, stopped within 10 s more (2 shared cores: slack)
        while any(_running(r) for r in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(r) for r in ranks), log.read_text()
        text = log.read_text()
        # the first rank to notice stops; its peer may then fail in a collective first and
        # report the lost peer instead: either way every rank ended
        said = [f"rank {rank}: the torchrun launcher (pid {proc.pid}) is gone; stopping this rank" in text
                for rank in (0, 1)]
        assert any(said), text
        assert all(said) or "lost contact with the other processes" in text, text
    finally:
        proc.kill()
        for pid in ranks:  # only the ranks this test started, by pid
            if _running(pid):
                os.kill(pid, 9)
    load_checkpoint(run / "last.pt", kind="pretrain", resume=True)  # what the interrupted run kept is whole


# -- without processes -----------------------------------------------------------------------


def test_launch_refusals_before_any_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="data.batch_size=6 .* not divisible by 4: choose a multiple of 4"):
        distributed.local_batch_size(6, 4)
    assert distributed.local_batch_size(8, 4) == 2
    if not torch.cuda.is_available():
        with pytest.raises(distributed.DistributedError, match="run.backend=nccl needs CUDA but this machine has no"):
            with distributed.session("auto", "nccl"):
                pass
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(distributed.DistributedError, match="2 processes on this node but it has 1 GPU.*-per-node 1"):
        with distributed.session("auto"):
            pass
    assert not torch.distributed.is_initialized()


def test_sampler_ranks_take_their_slice_of_the_same_global_order():
    def batches(rank, world):
        sampler = EpochBatchSampler(20, 8, True, True, torch.Generator().manual_seed(3), rank=rank, world_size=world)
        return [positions for _, positions in sampler]

    one = batches(0, 1)
    two = [batches(r, 2) for r in range(2)]
    assert len(one) == len(two[0]) == 2
    for k, global_batch in enumerate(one):
        np.testing.assert_array_equal(np.concatenate([two[0][k], two[1][k]]), global_batch)
    with pytest.raises(ValueError, match="global batch 8 is not divisible by the 3 processes"):
        EpochBatchSampler(20, 8, True, True, rank=0, world_size=3)


def test_each_rank_draws_its_own_augmentations(store):
    views = [PretrainDataset(store, BENCH, rank=r)[(1, np.arange(4))]["view1"] for r in (0, 1, 2)]
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    assert torch.equal(views[0], PretrainDataset(store, BENCH)[(1, np.arange(4))]["view1"])  # rank 0 = one process


class _HostReads:
    """Counts ``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()`` on tensors: the
    calls that make the host wait for a GPU."""

    NAMES = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist")

    def __init__(self):
        self.count, self.saved = 0, {}

    def __enter__(self):
        for name in self.NAMES:
            self.saved[name] = torch.Tensor.__dict__.get(name)  # None: inherited from the C base class
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def test_a_training_step_never_reads_the_device(store, tmp_path):
    """No host read in a model step (the queue pointer lives on the host), and none in the
    loop between log intervals: 8 more steps cost no more reads than 1."""
    t = torch.ones(2)
    with _HostReads() as control:  # the counter sees each kind of read it claims to count
        t[0].item(), float(t[0]), int(t[0]), bool(t[0]), t.tolist(), [0, 1][t[0].long()]
    assert control.count == 6
    torch.manual_seed(0)
    model = PretrainModel(["joint", "motion", "bone"], hidden_channels=4, hidden_dim=16, feature_dim=8,
                          queue_size=16, cross_epoch=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 12, 25, 1)
    for epoch in (1, 2):  # phase 1 and phase 2
        with _HostReads() as reads:
            loss = model(x, x.flip(2), torch.full((4,), 40.0), epoch=epoch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert reads.count == 0, epoch
    assert model._ptr == int(model.queue_ptr) == 8
    state = model.state_dict()
    state["queue_ptr"].fill_(12)
    model.load_state_dict(state)
    assert model._ptr == 12  # the host mirror follows a loaded state dict

    reads = {}
    for steps in (1, 9):  # one epoch each; run.log_interval (50) is never reached
        settings = TINY + [f"run.max_steps_per_epoch={steps}", "data.batch_size=2", "optim.epochs=1",
                           "model.modalities=[joint]"]
        with _HostReads() as counter:
            jobs.pretrain(store, BENCH, tmp_path / f"r{steps}", overrides=settings, log=_quiet)
        reads[steps] = counter.count
    assert reads[9] == reads[1] > 0  # the end-of-epoch log reads the loss: the counter was live
