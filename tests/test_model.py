"""PretrainModel, DistillModel and encoder_state_dicts (METHOD.md §6, §7) on tiny shapes."""

import copy

import numpy as np
import pytest
import torch

from ikem_data.names import MODALITIES
from ikem_train.methods.model import DistillModel, PretrainModel, encoder_state_dicts
from ikem_train.nets.stgcn import STGCN

from ntu_reader import read_batch

TINY = dict(hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=32)
B, K = 8, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _views(seed=0, n=B, t=50):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, t, 25, 2, generator=g)
    shear = torch.eye(3) + 0.1 * torch.randn(3, 3, generator=g)
    return x, torch.einsum("ij,njtvm->nitvm", shear, x), torch.full((n,), 60.0)


def _params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before, module):
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


@pytest.fixture(scope="module")
def real_views(ntu_dir):
    """Eight real NTU sequences (50 frames, centred per body) and a sheared key view."""
    xyz, frames, _ = read_batch(ntu_dir)
    idx = np.linspace(0, frames.min() - 1, 50).round().astype(int)
    joint = xyz[:B, :, idx] - xyz[:B, :, idx][:, :, :, 20:21]
    x = torch.from_numpy(np.ascontiguousarray(joint))
    g = torch.Generator().manual_seed(0)
    shear = torch.eye(3) + (torch.rand(3, 3, generator=g) - 0.5) * (1 - torch.eye(3))
    return x, torch.einsum("ij,njtvm->nitvm", shear, x), torch.from_numpy(frames[:B]).float()


@pytest.fixture(scope="module")
def teacher(real_views):
    """A six-modality teacher after 1 phase-1 and 2 phase-2 SGD steps on real NTU data."""
    torch.manual_seed(0)
    config = dict(modalities=list(MODALITIES), cross_epoch=1, **TINY)
    model = PretrainModel(**config)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    losses = []
    for epoch in (1, 2, 2):
        out = model(*real_views, epoch)
        optim.zero_grad()
        out["loss"].backward()
        optim.step()
        losses.append(out)
    return model, config, losses


def test_pretrain_steps_on_real_data_are_finite(teacher):
    _, _, losses = teacher
    for out in losses[:1]:
        assert set(out) == {"loss"} | {f"loss/nce/{m}" for m in MODALITIES}
    for out in losses[1:]:
        assert set(out) == {"loss"} | {f"loss/{kind}/{m}" for kind in ("cross", "ikem") for m in MODALITIES}
    for out in losses:
        assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
        parts = sum(v for k, v in out.items() if k != "loss")
        torch.testing.assert_close(out["loss"].detach(), parts)


def test_state_dict_layout(teacher):
    model, _, _ = teacher
    state = model.state_dict()
    for m in MODALITIES:
        assert f"query.{m}.backbone.blocks.0.edge_importance" in state
        assert f"query.{m}.head.2.weight" in state
        assert f"key.{m}.backbone.data_bn.weight" in state
        assert f"ikem_head.{m}.net.0.weight" in state
        assert state[f"queue_{m}"].shape == (8, K)
    assert state["ikem_head.joint.net.2.weight"].shape == (48, 48)  # 6 × feature_dim
    assert [k for k in state if "ptr" in k] == ["queue_ptr"]  # one pointer for all queues
    assert int(state["queue_ptr"]) == (3 * B) % K


def test_shared_pointer_moves_all_queues_together():
    torch.manual_seed(1)
    model = PretrainModel(["joint", "motion", "bone"], **TINY)
    before = {m: model.queue(m).clone() for m in model.modalities}
    model(*_views(), epoch=1)
    assert int(model.queue_ptr) == B
    for m in model.modalities:
        q = model.queue(m)
        assert not torch.equal(q[:, :B], before[m][:, :B])  # written columns 0..B-1
        torch.testing.assert_close(q[:, B:], before[m][:, B:])  # nothing else
        torch.testing.assert_close(q[:, :B].norm(dim=0), torch.ones(B))  # normalised keys
    for _ in range(3):
        model(*_views(), epoch=1)
    assert int(model.queue_ptr) == 0  # 4 × 8 = 32 wraps around


def test_queue_size_not_divisible_by_batch():
    model = PretrainModel("joint", **TINY)
    with pytest.raises(ValueError, match="not divisible by the batch size 6"):
        model(*_views(n=6), epoch=1)


def test_key_init_copy_and_reinit():
    torch.manual_seed(0)
    copied = PretrainModel("joint", key_init="copy", **TINY)
    for (name, q), k in zip(copied.query.named_parameters(), copied.key.parameters()):
        assert torch.equal(q, k), name
    assert not any(p.requires_grad for p in copied.key.parameters())
    reinit = PretrainModel("joint", key_init="reinit", **TINY)
    assert not torch.equal(reinit.query.joint.head[0].weight, reinit.key.joint.head[0].weight)
    with pytest.raises(ValueError, match="key_init"):
        PretrainModel("joint", key_init="other", **TINY)


def test_frozen_keys_stay_frozen_in_phase_two_only():
    torch.manual_seed(0)
    model = PretrainModel(MODALITIES, key_init="reinit", momentum=0.5, cross_epoch=1, **TINY)
    views = _views()
    frozen = {"joint", "bone", "rotation_axis"}
    before = {m: _params(model.key[m]) for m in MODALITIES}
    model(*views, epoch=1)  # phase 1: every key encoder moves
    assert all(_changed(before[m], model.key[m]) for m in MODALITIES)
    before = {m: _params(model.key[m]) for m in MODALITIES}
    out = model(*views, epoch=2)  # phase 2: the reference's three keys are frozen
    assert "loss/cross/joint" in out
    for m in MODALITIES:
        assert _changed(before[m], model.key[m]) == (m not in frozen), m
    # the switch: nothing frozen
    model.frozen_keys = ()
    before = {m: _params(model.key[m]) for m in MODALITIES}
    model(*views, epoch=2)
    assert all(_changed(before[m], model.key[m]) for m in MODALITIES)


def test_momentum_update_uses_query_before_key_pass():
    torch.manual_seed(0)
    model = PretrainModel("joint", key_init="reinit", momentum=0.9, **TINY)
    q0, k0 = _params(model.query.joint), _params(model.key.joint)
    model(*_views(), epoch=1)
    for name, k in model.key.joint.named_parameters():
        torch.testing.assert_close(k, 0.9 * k0[name] + 0.1 * q0[name])


def test_single_modality_is_plain_moco_and_crossclr_baseline_runs():
    torch.manual_seed(0)
    single = PretrainModel("bone", cross_epoch=0, **TINY)
    out = single(*_views(), epoch=5)  # one modality: never a cross phase
    assert set(out) == {"loss", "loss/nce/bone"}
    three = PretrainModel("joint,motion,bone", bone_pairs="crossclr", cross_epoch=0, context=False,
                          ikem=False, topk=2, **TINY)
    assert not hasattr(three, "ikem_head")
    out = three(*_views(), epoch=1)
    assert set(out) == {"loss"} | {f"loss/cross/{m}" for m in ("joint", "motion", "bone")}
    assert torch.isfinite(out["loss"])


def test_bf16_autocast_cpu_keeps_float32_loss():
    torch.manual_seed(0)
    model = PretrainModel("joint,motion", cross_epoch=0, **TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_views(), epoch=1)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert model.queue_joint.dtype == torch.float32


def test_distill_steps_gradients_reach_only_students(teacher, real_views):
    model_t, config, _ = teacher
    torch.manual_seed(0)
    distill = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K)
    # the teacher is the pretrained query encoders
    for m in MODALITIES:
        for name, p in distill.teacher[m].named_parameters():
            assert torch.equal(p, model_t.query[m].get_parameter(name))
            assert not p.requires_grad
    optim = torch.optim.SGD(distill.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    teacher_before, student_before = _params(distill.teacher), _params(distill.student)
    for _ in range(2):
        out = distill(*real_views, epoch=1)
        assert set(out) == {"loss"} | {f"loss/distill/{m}" for m in ("joint", "motion", "bone")}
        assert torch.isfinite(out["loss"])
        optim.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in distill.teacher.parameters())
        assert all(p.grad is not None for p in distill.student.parameters())
        optim.step()
    assert not _changed(teacher_before, distill.teacher)
    assert _changed(student_before, distill.student)
    assert int(distill.queue_ptr) == (2 * B) % K
    assert distill.queue_teacher.shape == (48, K)
    state = distill.state_dict()
    assert "student.joint.backbone.data_bn.weight" in state and "teacher.omega" not in state
    assert {f"queue_{m}" for m in MODALITIES} <= set(state)


def test_teacher_mode_and_omega_queue_switches(teacher):
    model_t, config, _ = teacher
    config = dict(config, dropout=0.0)  # deterministic forward
    views = _views(3)

    def loss_with(d, omega_rows):
        d = copy.deepcopy(d)
        d.queue_angular_velocity.copy_(omega_rows)
        return d(*views, epoch=1)["loss"].item()

    scrambled = torch.nn.functional.normalize(torch.randn(8, K), dim=0)
    ref = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K)  # omega_queue="bone"
    assert loss_with(ref, ref.queue_angular_velocity) == pytest.approx(loss_with(ref, scrambled), rel=1e-6)
    fixed = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K, omega_queue="angular_velocity")
    assert loss_with(fixed, fixed.queue_angular_velocity) != pytest.approx(loss_with(fixed, scrambled), rel=1e-6)

    bn = "joint.backbone.data_bn.running_mean"
    for mode, drifts in (("train", True), ("eval", False)):
        d = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K, teacher_mode=mode)
        assert d.teacher.training == (mode == "train") and d.student.training
        before = d.teacher.state_dict()[bn].clone()
        d(*views, epoch=1)
        assert (not torch.equal(before, d.teacher.state_dict()[bn])) == drifts


def test_distill_rejects_bad_teachers(teacher):
    model_t, config, _ = teacher
    three = PretrainModel("joint,motion,bone", **TINY)
    with pytest.raises(ValueError, match="six-modality"):
        DistillModel(three.state_dict(), dict(TINY, modalities=["joint", "motion", "bone"]), student_dim=24)
    with pytest.raises(ValueError, match=r"shape mismatch \(\d+\): query\.\w+\.backbone"):
        DistillModel(model_t.state_dict(), dict(config, hidden_channels=8), student_dim=48, queue_size=K)
    partial = {k: v for k, v in model_t.state_dict().items() if not k.startswith("query.bone.")}
    with pytest.raises(ValueError, match=r"missing \(\d+\): query.bone"):
        DistillModel(partial, config, student_dim=48, queue_size=K)
    student = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K)
    with pytest.raises(ValueError, match="student checkpoint cannot be a teacher"):
        DistillModel(student.state_dict(), config, student_dim=48, queue_size=K)


def test_encoder_state_dicts_load_strictly(teacher):
    model_t, config, _ = teacher
    states = encoder_state_dicts(model_t.state_dict(), "all")
    assert list(states) == list(MODALITIES)
    for m, state in states.items():
        enc = STGCN(hidden_channels=4, hidden_dim=16)
        enc.load_state_dict(state, strict=True)
        assert torch.equal(enc.blocks[3].gcn.conv.weight, model_t.query[m].backbone.blocks[3].gcn.conv.weight)
    student = DistillModel(model_t.state_dict(), config, student_dim=48, queue_size=K)
    states = encoder_state_dicts(student.state_dict(), ["joint", "bone"])
    assert torch.equal(states["bone"]["data_bn.weight"], student.student.bone.backbone.data_bn.weight)
    with pytest.raises(KeyError, match="no encoder for modality 'acceleration'; it has: joint, motion, bone"):
        encoder_state_dicts(student.state_dict(), "joint,acceleration")


def test_constructor_rejects_bad_switches():
    with pytest.raises(ValueError, match="unknown bone_pairs 'aimclr'"):
        PretrainModel("joint", bone_pairs="aimclr", **TINY)
    with pytest.raises(ValueError, match="topk=33"):
        PretrainModel("joint,bone", topk=33, **TINY)
    with pytest.raises(ValueError, match="cross_phase_frozen_keys"):
        PretrainModel("joint,bone", cross_phase_frozen_keys=("jiont",), **TINY)
    with pytest.raises(ValueError, match="unknown modality 'skeleton'"):
        PretrainModel("joint,skeleton", **TINY)
