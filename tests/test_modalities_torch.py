"""Torch modalities (METHOD.md §3) against hand-computed cases, a slow numpy reference
written from METHOD.md's 1-based tables, the numba kernels, and real NTU files."""

import numpy as np
import pytest
import torch

from ikem_data.names import MODALITIES
from ikem_train.data.device_modalities import compute_modalities

from ntu_reader import read_batch

# METHOD.md §3.4 / §3.5, 1-based, copied independently of ikem_data.layouts.
_COMMON = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
           (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
           (19, 18), (20, 19), (21, 21)]
IKEM_BONES = _COMMON + [(22, 8), (23, 8), (24, 12), (25, 12)]
CROSSCLR_BONES = _COMMON + [(22, 23), (23, 8), (24, 25), (25, 12)]
AXES = _COMMON + [(22, 8), (23, 22), (24, 12), (25, 24)]


def _unit(v):
    n = np.sqrt((v ** 2).sum(axis=0))
    return v / np.maximum(n, 1e-12)


def reference(joint, frames, bone_pairs="ikem", true_timeline=True):
    """Slow float64 numpy version, one joint at a time; joint (N, 3, T, V, M)."""
    x = joint.astype(np.float64)
    n, _, t_len, v_len, _ = x.shape
    out = {"joint": x}
    tau = 50.0 / np.asarray(frames, np.float64) if true_timeline else np.ones(n)
    tau = tau[:, None, None, None, None]
    motion = np.zeros_like(x)
    for t in range(t_len - 1):
        motion[:, :, t] = tau[:, :, 0] * (x[:, :, t + 1] - x[:, :, t])
    acc = np.zeros_like(x)
    for t in range(t_len - 2):
        acc[:, :, t] = tau[:, :, 0] * (motion[:, :, t + 1] - motion[:, :, t])
    pairs = IKEM_BONES if bone_pairs == "ikem" else CROSSCLR_BONES
    bone = np.zeros_like(x)
    for v, u in pairs:
        bone[:, :, :, v - 1] = x[:, :, :, v - 1] - x[:, :, :, u - 1]
    if bone_pairs == "ikem":
        a = x[:, :, :, 1] - x[:, :, :, 8]
        b = x[:, :, :, 4] - x[:, :, :, 8]
        bone[:, :, :, 20] = _unit(np.moveaxis(np.cross(np.moveaxis(a, 1, -1), np.moveaxis(b, 1, -1)), -1, 0)).swapaxes(0, 1)
    axis = np.zeros_like(x)
    theta = np.zeros((n, t_len, v_len, x.shape[-1]))
    for v, u in AXES:
        bv, bu = np.moveaxis(bone[:, :, :, v - 1], 1, -1), np.moveaxis(bone[:, :, :, u - 1], 1, -1)  # (N, T, M, 3)
        axis[:, :, :, v - 1] = np.moveaxis(np.cross(bv, bu), -1, 1)
        uv = bv / np.maximum(np.linalg.norm(bv, axis=-1, keepdims=True), 1e-12)
        uu = bu / np.maximum(np.linalg.norm(bu, axis=-1, keepdims=True), 1e-12)
        theta[:, :, v - 1] = np.arctan2(np.linalg.norm(np.cross(uv, uu), axis=-1), (uv * uu).sum(-1))
    unit_axis = np.moveaxis(_unit(np.moveaxis(axis, 1, 0)), 0, 1)
    omega = np.zeros_like(x)
    for t in range(t_len - 1):
        omega[:, :, t] = tau[:, :, 0] * (theta[:, None, t + 1] - theta[:, None, t]) * unit_axis[:, :, t]
    omega[:, :, :, 20] = 0
    out.update(motion=motion, acceleration=acc, bone=bone, rotation_axis=axis, angular_velocity=omega)
    return out


def _check(got, ref, atol=1e-5):
    for name in MODALITIES:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-4, atol=atol, err_msg=name)


def test_motion_and_acceleration_by_hand():
    t = torch.arange(6, dtype=torch.float32)
    joint = torch.zeros(1, 3, 6, 25, 1)
    joint[0, 0, :, 3, 0] = t ** 2  # x of joint 4 = t²
    out = compute_modalities(joint, torch.tensor([100.0]), ["motion", "acceleration"])
    tau = 0.5
    torch.testing.assert_close(out["motion"][0, 0, :, 3, 0], tau * torch.tensor([1.0, 3, 5, 7, 9, 0]))
    torch.testing.assert_close(out["acceleration"][0, 0, :, 3, 0], tau ** 2 * torch.tensor([2.0, 2, 2, 2, 0, 0]))
    off = compute_modalities(joint, torch.tensor([100.0]), ["motion"], true_timeline=False)
    torch.testing.assert_close(off["motion"][0, 0, :, 3, 0], torch.tensor([1.0, 3, 5, 7, 9, 0]))


def test_torso_normal_and_bones_by_hand():
    joint = torch.zeros(1, 3, 2, 25, 1)
    joint[0, :, :, 1, 0] = torch.tensor([0.0, -1.0, 0.0])[:, None]  # spine mid (2)
    joint[0, :, :, 4, 0] = torch.tensor([-2.0, 0.0, 0.0])[:, None]  # left shoulder (5)
    joint[0, :, :, 8, 0] = 0.0                                       # right shoulder (9)
    joint[0, :, :, 21, 0] = torch.tensor([0.0, 0.0, 3.0])[:, None]  # hand tip (22)
    out = compute_modalities(joint, [50], ["bone"])["bone"][0, :, 0, :, 0]
    torch.testing.assert_close(out[:, 20], torch.tensor([0.0, 0.0, -1.0]))  # (0,-1,0) x (-2,0,0), unit
    torch.testing.assert_close(out[:, 21], torch.tensor([0.0, 0.0, 3.0]))   # 22 - 8 (IKEM)
    torch.testing.assert_close(out[:, 4], torch.tensor([-2.0, 0.0, 0.0]))   # 5 - 21
    cc = compute_modalities(joint, [50], ["bone"], bone_pairs="crossclr")["bone"][0, :, 0, :, 0]
    torch.testing.assert_close(cc[:, 20], torch.zeros(3))                    # root bone stays zero
    torch.testing.assert_close(cc[:, 21], torch.tensor([0.0, 0.0, 3.0]))    # 22 - 23 (23 is zero)


def test_angular_velocity_of_a_turning_head_by_hand():
    t_len, f = 8, 100.0
    phi = 0.1 + 0.02 * torch.arange(t_len, dtype=torch.float64)
    joint = torch.zeros(1, 3, t_len, 25, 1, dtype=torch.float64)
    joint[0, 1, :, 2, 0] = 1.0                                       # neck (3) above the origin
    joint[0, 0, :, 3, 0] = torch.sin(phi)                            # head (4) = neck + (sin φ, cos φ, 0)
    joint[0, 1, :, 3, 0] = 1.0 + torch.cos(phi)
    out = compute_modalities(joint, [f], ["rotation_axis", "angular_velocity"])
    # R_4 = b_4 x b_3 = (sin φ, cos φ, 0) x (0, 1, 0) = (0, 0, sin φ): unit axis +z, θ = φ
    torch.testing.assert_close(out["rotation_axis"][0, 2, :, 3, 0], torch.sin(phi))
    expected = torch.full((t_len,), 50 / f * 0.02, dtype=torch.float64)
    expected[-1] = 0
    torch.testing.assert_close(out["angular_velocity"][0, 2, :, 3, 0], expected)
    assert out["angular_velocity"][0, :2].abs().max() == 0 and out["angular_velocity"][0, :, :, 4:].abs().max() == 0


@pytest.mark.parametrize("bone_pairs", ["ikem", "crossclr"])
def test_random_batch_of_three_matches_reference(bone_pairs):
    # N == 3 is the batch size at which torch.cross without dim picks the wrong axis.
    rng = np.random.default_rng(0)
    joint = rng.normal(size=(3, 3, 12, 25, 2)).astype(np.float32)
    frames = np.array([40, 50, 137])
    got = compute_modalities(torch.from_numpy(joint), torch.from_numpy(frames), MODALITIES, bone_pairs)
    _check(got, reference(joint, frames, bone_pairs))
    singles = [compute_modalities(torch.from_numpy(joint[i:i + 1]), frames[i:i + 1], MODALITIES, bone_pairs)
               for i in range(3)]
    for name in MODALITIES:
        torch.testing.assert_close(got[name], torch.cat([s[name] for s in singles]))
    _check(compute_modalities(torch.from_numpy(joint), frames, MODALITIES, true_timeline=False),
           reference(joint, frames, true_timeline=False))


def test_subset_and_errors():
    joint = torch.randn(2, 3, 5, 25, 1)
    out = compute_modalities(joint, [10, 20], ["angular_velocity", "joint"])
    assert list(out) == ["angular_velocity", "joint"] and out["joint"] is joint
    assert list(compute_modalities(joint, [10, 20], "joint,omega")) == ["joint", "angular_velocity"]
    with pytest.raises(ValueError, match="unknown modality"):
        compute_modalities(joint, [10, 20], ["omega_typo"])
    with pytest.raises(ValueError, match="bone_pairs"):
        compute_modalities(joint, [10, 20], ["bone"], bone_pairs="nope")


def _real_sequences(ntu_dir):
    xyz, frames, _ = read_batch(ntu_dir)
    idx = np.linspace(0, frames.min() - 1, 50).round().astype(int)  # 50 real frames of each file
    joint = xyz[:, :, idx]
    joint = joint - joint[:, :, :, 20:21]  # centre each body on its spine-shoulder
    return np.ascontiguousarray(joint), frames


def test_real_ntu_files_match_reference(ntu_dir):
    joint, frames = _real_sequences(ntu_dir)
    got = compute_modalities(torch.from_numpy(joint), torch.from_numpy(frames), MODALITIES)
    _check(got, reference(joint, frames), atol=1e-4)
    got3 = compute_modalities(torch.from_numpy(joint[:3]), frames[:3], MODALITIES)  # batch of 3
    _check(got3, reference(joint[:3], frames[:3]), atol=1e-4)


def _assert_equal_to_numba(x, frames):
    from ikem_data.modalities import kernels as numba_mod

    for bone_pairs in ("ikem", "crossclr"):
        for true_timeline in (True, False):
            ref = numba_mod.compute_modalities(x, frames, MODALITIES, bone_pairs, true_timeline)
            got = compute_modalities(torch.from_numpy(x), torch.from_numpy(np.asarray(frames)), MODALITIES,
                                     bone_pairs, true_timeline)
            for name in MODALITIES:
                np.testing.assert_allclose(got[name].numpy(), np.asarray(ref[name]), rtol=1e-4, atol=1e-4,
                                           err_msg=f"{name} ({bone_pairs}, true_timeline={true_timeline})")


def test_equal_to_numba_kernels_on_random_input():
    # runs without ../shared/data: random bodies, a batch of 3 and an absent second body
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.3, size=(3, 3, 50, 25, 2)).astype(np.float32)
    x[1, ..., 1] = 0
    _assert_equal_to_numba(x, np.array([30, 50, 300]))
    _assert_equal_to_numba(x[:1], np.array([77]))


def test_equal_to_numba_kernels_on_real_files(ntu_dir):
    joint, frames = _real_sequences(ntu_dir)
    _assert_equal_to_numba(joint, frames)
    _assert_equal_to_numba(joint[:3], frames[:3])
