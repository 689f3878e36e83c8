"""Stacked encoders (issue 20) against the same encoders run one by one, in float64, and
ikem's Dropout against the definition of inverted dropout."""

import copy

import pytest
import torch

from ikem_data.names import MODALITIES, STUDENT_MODALITIES
from ikem_train.config import load_config
from ikem_train.methods.model import DistillModel, Encoder, PretrainModel, run_encoders
from ikem_train.nets.stacked import stacked_forward
from ikem_train.nets.stgcn import Dropout

from test_model import TINY, real_views, teacher  # noqa: F401  (fixtures on eight real NTU sequences)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _encoders(g, seed=0, **kwargs):
    torch.manual_seed(seed)
    enc = dict(in_channels=3, hidden_channels=4, hidden_dim=16, dropout=0.0, **kwargs)
    return [Encoder(8, **enc).double() for _ in range(g)]


def test_stacked_forward_equals_each_encoder_in_train_and_eval_mode(real_views):
    view, key_view, _ = real_views
    inputs = [view.double(), key_view.double(), (view - key_view).double()]  # three different streams
    stacked = _encoders(3)
    alone = copy.deepcopy(stacked)
    for mode in (True, False):
        for e in stacked + alone:
            e.train(mode)
        got = stacked_forward(stacked, inputs)
        want = [e(x) for e, x in zip(alone, inputs)]
        for (z, h), (z_ref, h_ref) in zip(got, want):
            assert z.shape == z_ref.shape == (8, 8) and h.shape == h_ref.shape == (8, 16)
            assert torch.allclose(z, z_ref, rtol=0, atol=1e-12) and torch.allclose(h, h_ref, rtol=0, atol=1e-12)
        if mode:  # gradients of every parameter, BN running statistics and counters
            weights = torch.randn(3, 8, 8, dtype=torch.float64)
            sum((w * z).sum() for w, (z, _) in zip(weights, got)).backward()
            sum((w * z).sum() for w, (z, _) in zip(weights, want)).backward()
            for a, b in zip(stacked, alone):
                pairs = list(zip(a.parameters(), b.parameters()))
                assert all(p.grad is not None for p, _ in pairs)
                assert _max_diff([p.grad for p, _ in pairs], [q.grad for _, q in pairs]) < 1e-10
                assert _max_diff(a.buffers(), b.buffers()) < 1e-12  # running mean/var, num_batches_tracked
                assert int(a.backbone.data_bn.num_batches_tracked) == 1
    assert not torch.allclose(got[0][0], got[1][0])  # the streams did differ


def test_stacked_forward_refuses_encoders_of_different_shape_or_mode():
    a, b = _encoders(2)
    x = torch.zeros(2, 3, 10, 25, 1, dtype=torch.float64)
    wide = Encoder(8, hidden_channels=8, hidden_dim=16).double()
    with pytest.raises(ValueError, match="identical structure"):
        stacked_forward([a, wide], [x, x])
    b.eval()
    with pytest.raises(ValueError, match="same train/eval mode"):
        stacked_forward([a, b], [x, x])
    b.train()
    with pytest.raises(ValueError, match="share shape"):
        stacked_forward([a, b], [x, x[:1]])
    with pytest.raises(ValueError, match="one input per encoder"):
        stacked_forward([a, b], [x])


def _train(model, views, epochs):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=1e-4)
    losses = []
    for epoch in epochs:
        out = model(*views, epoch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append({k: float(v.detach()) for k, v in out.items()})
    return losses


def test_teacher_stacked_equals_one_by_one_through_both_phases(real_views):
    """Six query and six key encoders, phase 1 then phase 2 (CrosSCLR + IKEM, frozen keys), float64."""
    torch.manual_seed(0)
    model = PretrainModel(list(MODALITIES), cross_epoch=1, dropout=0.0, stacked_encoders=True, **TINY).double()
    reference = copy.deepcopy(model)
    reference.stacked_encoders = False
    views = [v.double() for v in real_views[:2]] + [real_views[2]]
    got, want = _train(model, views, (1, 2, 2)), _train(reference, views, (1, 2, 2))
    assert got[0].keys() == want[0].keys() and got[-1].keys() == want[-1].keys()
    assert any(k.startswith("loss/ikem/") for k in got[-1])
    for a, b in zip(got, want):
        assert all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k])) for k in a)  # logits are float32
    state, ref = model.state_dict(), reference.state_dict()
    assert state.keys() == ref.keys()
    assert max((state[k].double() - ref[k].double()).abs().max().item() for k in state) < 1e-6


def test_student_stacked_equals_one_by_one(teacher, real_views):
    model, config, _ = teacher
    config = dict(config, dropout=0.0)  # the students take the teacher's widths and dropout
    views = [v.double() for v in real_views[:2]] + [real_views[2]]
    torch.manual_seed(1)
    stacked = DistillModel(model.state_dict(), config, queue_size=32, student_dim=48, stacked_encoders=True).double()
    alone = copy.deepcopy(stacked)
    alone.stacked_encoders = False
    got, want = _train(stacked, views, (1, 1)), _train(alone, views, (1, 1))
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    assert {k.split("/")[-1] for k in got[0] if k != "loss"} == set(STUDENT_MODALITIES)
    for a, b in zip(got, want):
        assert all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k])) for k in a)
    s, r = stacked.state_dict(), alone.state_dict()
    assert max((s[k].double() - r[k].double()).abs().max().item() for k in s) < 1e-6


def test_auto_runs_one_by_one_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr("ikem_train.methods.model.stacked_forward", lambda e, x: calls.append(len(e)) or [])
    encoders = _encoders(2)
    x = torch.zeros(2, 3, 10, 25, 1, dtype=torch.float64)
    assert len(run_encoders(encoders, [x, x], "auto")) == 2 and calls == []
    run_encoders(encoders, [x, x], True)
    assert calls == [2]


def test_switch_in_config_and_old_configs_without_it():
    assert load_config().model.stacked_encoders == "auto" == load_config().distill.stacked_encoders
    assert load_config(overrides=["model.stacked_encoders=false"]).model.stacked_encoders is False
    with pytest.raises(ValueError, match="stacked_encoders must be auto, true or false, not 1"):
        load_config(overrides=["model.stacked_encoders=1"])
    with pytest.raises(ValueError, match="stacked_encoders must be"):
        PretrainModel(["joint"], stacked_encoders="yes", **TINY)


def test_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    p = 0.3
    x = torch.rand(1000, 1000, dtype=torch.float64) + 0.5  # no zeros of its own
    layer = Dropout(p)
    x_in = x.clone().requires_grad_(True)
    y = layer(x_in.clone())  # in place on its input
    kept = y != 0
    # Each element is either dropped or x / (1 - p) (slow reference: the definition).
    assert torch.allclose(y[kept], x[kept] / (1 - p), rtol=0, atol=1e-15)
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5  # binomial, five standard deviations
    y.sum().backward()
    assert torch.equal(x_in.grad, kept.double() / (1 - p))
    a, b = Dropout(p)(x.clone()), Dropout(p)(x.clone())
    assert not torch.equal(a, b)  # fresh masks per call
    layer.eval()
    assert torch.equal(layer(x.clone()), x)
    assert torch.equal(Dropout(0.0)(x.clone()), x)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_a_run_resumes_with_the_other_setting_and_from_checkpoints_that_predate_it(tmp_path):
    from ikem_train import jobs
    from ikem_train.checkpoint import load_checkpoint, save_checkpoint
    from ikem_train.data.datasets import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.zarr", n_train=16, n_val=4, frames=20)
    tiny = ["model.hidden_channels=4", "model.hidden_dim=16", "model.feature_dim=8", "model.queue_size=16",
            "data.batch_size=8", "data.num_workers=0", "run.device=cpu", "run.progress=false",
            "model.modalities=[joint,motion]", "run.save_interval=1"]
    run = tmp_path / "run"
    jobs.pretrain(store, "ntu60-xsub", run, overrides=[*tiny, "optim.epochs=1", "model.stacked_encoders=false"],
                  log=lambda *a: None)
    ck = load_checkpoint(run / "last.pt")
    del ck["config"]["model"]["stacked_encoders"]  # as written before the switch existed
    save_checkpoint(run / "last.pt", ck)
    jobs.pretrain(store, "ntu60-xsub", run, overrides=[*tiny, "optim.epochs=2", "model.stacked_encoders=true"],
                  resume=True, log=lambda *a: None)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_bn_recalibration_finds_ikem_dropout_and_turns_it_off(tmp_path):
    """recalibrate_bn finds dropout layers by class: two passes give the very same statistics."""
    from ikem_train.data.datasets import ModalityDataset, write_synthetic_store
    from ikem_train.eval.features import recalibrate_bn
    from ikem_train.nets.stgcn import STGCN

    store = write_synthetic_store(tmp_path / "s.zarr", n_train=8, n_val=4, frames=20)
    dataset = ModalityDataset(store, "ntu60-xsub", "train", ["joint"])
    encoders = torch.nn.ModuleDict({"joint": STGCN(hidden_channels=4, hidden_dim=8, dropout=0.5)})
    assert any(isinstance(m, torch.nn.Dropout) for m in encoders.modules())
    stats = []
    for _ in range(2):
        recalibrate_bn(encoders, dataset, 4, torch.device("cpu"))
        stats.append([b.clone() for b in encoders.buffers()])
    assert all(torch.equal(a, b) for a, b in zip(*stats))
