"""The training loop with a stand-in model following the PretrainModel forward contract:
schedule, metrics, checkpoints, exact resume, NaN handling, run-folder safety."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ikem_train.checkpoint import load_checkpoint, seed_everything
from ikem_train.config import ConfigError, load_config
from ikem_train.data.datasets import PretrainDataset, write_synthetic_store
from ikem_train.training.loop import TrainingError, lr_at, prepare_run_dir, train


class StandIn(nn.Module):
    """Test double of PretrainModel's interface: forward(view1, view2, frames, epoch) -> losses.

    It uses dropout (global torch RNG), a momentum key encoder and a queue buffer, so exact
    resume has to restore all of them. ``nan_at`` makes the loss NaN from that epoch on.
    """

    inputs = ("view1", "view2", "frames")

    def __init__(self, queue_size=8, nan_at=None):
        super().__init__()
        self.query = nn.Linear(3, 4)
        self.key = nn.Linear(3, 4)
        self.key.load_state_dict(self.query.state_dict())
        self.key.requires_grad_(False)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("queue", F.normalize(torch.randn(4, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.nan_at = nan_at

    def forward(self, view1, view2, frames, epoch):
        x1, x2 = view1.mean(dim=(2, 3, 4)), view2.mean(dim=(2, 3, 4))  # (B, 3)
        q = F.normalize(self.query(self.drop(x1)), dim=1)
        with torch.no_grad():
            for pk, pq in zip(self.key.parameters(), self.query.parameters()):
                pk.mul_(0.9).add_(pq.detach(), alpha=0.1)
            k = F.normalize(self.key(x2), dim=1)
        queue = self.queue.clone()  # the enqueue below rewrites the buffer before backward
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.1
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        ptr = int(self.queue_ptr)
        self.queue[:, ptr : ptr + len(k)] = k.T
        self.queue_ptr[0] = (ptr + len(k)) % self.queue.shape[1]
        if self.nan_at is not None and epoch >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "loss/nce/joint": loss.detach()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("loop") / "s.zarr", n_train=16, n_val=4, frames=12)


def _cfg(epochs, *extra):
    return load_config(None, ["data.batch_size=4", "data.num_workers=0", "model.queue_size=8",
                              "distill.queue_size=8", f"optim.epochs={epochs}", "optim.milestones=[1]",
                              "run.device=cpu", "run.progress=false", "run.save_interval=2", *extra])


def _run(store, run_dir, epochs, resume=False, nan_at=None):
    cfg = _cfg(epochs)
    ds = PretrainDataset(store, "ntu60-xsub", seed=cfg.data.seed)
    seed_everything(cfg.data.seed)
    model = StandIn(nan_at=nan_at)
    prepare_run_dir(run_dir, resume)
    train(model, ds, cfg, run_dir, kind="pretrain", modalities=["joint"], resume=resume, log=lambda *a: None)
    return model


def test_lr_schedule_is_a_function_of_the_epoch():
    assert [lr_at(e, 0.1, [250]) for e in (1, 250, 251, 300)] == [0.1, 0.1, pytest.approx(0.01), pytest.approx(0.01)]
    assert lr_at(100, 3.0, [80]) == pytest.approx(0.3)
    assert lr_at(5, 1.0, [2, 4], 0.5) == 0.25


def test_resume_equals_a_straight_run(store, tmp_path):
    straight = _run(store, tmp_path / "a", epochs=2)
    _run(store, tmp_path / "b", epochs=1)
    resumed = _run(store, tmp_path / "b", epochs=2, resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines_b] == [1, 2]
    assert [l["loss"] for l in lines_a] == [l["loss"] for l in lines_b]
    assert lines_a[1]["lr"] == pytest.approx(0.01)  # step after epoch 1
    ck = load_checkpoint(tmp_path / "b" / "last.pt", kind="pretrain")
    assert ck["epoch"] == 2 and ck["step"] == 8 and ck["modalities"] == ["joint"]
    assert ck["config"]["optim"]["epochs"] == 2 and "loader" in ck["rng"]
    assert (tmp_path / "a" / "epoch002.pt").is_file() and not (tmp_path / "a" / "epoch001.pt").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(store, tmp_path):
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 1 of the epoch \(global step 5\)"):
        _run(store, run, epochs=3, nan_at=2)
    ck = load_checkpoint(run / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingError, match="no checkpoint was written yet"):
        _run(store, tmp_path / "nan0", epochs=1, nan_at=1)


def test_run_folder_is_never_reused_silently(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(TrainingError, match="not empty; pass --resume"):
        prepare_run_dir(run, resume=False)
    with pytest.raises(TrainingError, match="holds no run to continue"):
        prepare_run_dir(run, resume=True)
    assert (run / "notes.txt").read_text() == "keep me"


def test_resume_refuses_another_model_config(store, tmp_path):
    _run(store, tmp_path / "c", epochs=1)
    cfg = _cfg(2, "model.temperature=0.2")
    ds = PretrainDataset(store, "ntu60-xsub")
    with pytest.raises(TrainingError, match="model.temperature: checkpoint 0.07, now 0.2"):
        train(StandIn(), ds, cfg, tmp_path / "c", kind="pretrain", modalities=["joint"], resume=True, log=lambda *a: None)


class Diverging(StandIn):
    """A finite loss whose step leaves an inf weight in epoch ``at`` (what a huge lr does)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def forward(self, view1, view2, frames, epoch):
        out = super().forward(view1, view2, frames, epoch)
        if epoch >= self.at:
            with torch.no_grad():
                self.query.weight[0, 0] = float("inf")
        return out


def test_non_finite_weights_are_never_checkpointed(store, tmp_path):
    cfg = _cfg(2, "run.max_steps_per_epoch=1")
    ds = PretrainDataset(store, "ntu60-xsub", seed=cfg.data.seed)
    run = prepare_run_dir(tmp_path / "inf", False)
    with pytest.raises(TrainingError, match=r"non-finite weights after epoch 2 .*query.weight.*last good checkpoint"):
        train(Diverging(at=2), ds, cfg, run, kind="pretrain", modalities=["joint"], log=lambda *a: None)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # epoch 1's weights, all finite
    assert torch.isfinite(load_checkpoint(run / "last.pt")["model"]["query.weight"]).all()


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_a_non_finite_setting_is_refused(value):
    with pytest.raises(ConfigError, match=r"^optim.lr: -?(inf|nan) is not a finite number$"):
        load_config(None, [f"optim.lr={value}"])


def test_keep_last_keeps_only_the_newest_periodic_checkpoints(store, tmp_path):
    cfg = _cfg(5, "run.save_interval=1", "run.keep_last=2", "run.max_steps_per_epoch=1")
    ds = PretrainDataset(store, "ntu60-xsub", seed=cfg.data.seed)
    run = prepare_run_dir(tmp_path / "keep", False)
    seed_everything(cfg.data.seed)
    train(StandIn(), ds, cfg, run, kind="pretrain", modalities=["joint"], log=lambda *a: None)
    assert sorted(p.name for p in run.glob("*.pt")) == ["epoch004.pt", "epoch005.pt", "last.pt"]
