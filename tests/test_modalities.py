"""The six modality kernels (METHOD.md §3) against a slow, obvious numpy reference."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ikem_data.layouts import get_layout
from ikem_data.modalities.kernels import compute_modalities, time_scale
from ikem_data.names import MODALITIES
from ikem_data.modalities.preprocess import preprocess
from ntu_reader import read_batch

_KV2 = get_layout("kinect_v2_25")
IKEM_BONE_PAIRS, CROSSCLR_BONE_PAIRS = _KV2.bone_pairs["ikem"], _KV2.bone_pairs["crossclr"]
ROTATION_AXIS_PAIRS = _KV2.axis_pairs


def unit(x, axis=1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def slow_modalities(joint, frames, pairs="ikem", true_timeline=True):
    """METHOD.md §3, written from the text in float64 with numpy, sample by sample."""
    out = {name: np.zeros(joint.shape) for name in MODALITIES}
    bone_pairs = IKEM_BONE_PAIRS if pairs == "ikem" else CROSSCLR_BONE_PAIRS
    for n in range(joint.shape[0]):
        x = joint[n].astype(np.float64)                       # (3, T, 25, M)
        tau = 50.0 / frames[n] if true_timeline else 1.0
        mo = np.zeros_like(x)
        mo[:, :-1] = tau * (x[:, 1:] - x[:, :-1])
        acc = np.zeros_like(x)
        acc[:, :-2] = tau * tau * (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2])
        bone = np.zeros_like(x)
        for v, u in bone_pairs:
            bone[:, :, v] = x[:, :, v] - x[:, :, u]
        if pairs == "ikem":
            normal = np.cross(x[:, :, 1] - x[:, :, 8], x[:, :, 4] - x[:, :, 8], axis=0)
            bone[:, :, 20] = unit(normal, axis=0)
        axis = np.zeros_like(x)
        omega = np.zeros_like(x)
        for v, u in ROTATION_AXIS_PAIRS:
            axis[:, :, v] = np.cross(bone[:, :, v], bone[:, :, u], axis=0)
            bv, bu = unit(bone[:, :, v], 0), unit(bone[:, :, u], 0)
            theta = np.arctan2(np.linalg.norm(np.cross(bv, bu, axis=0), axis=0), (bv * bu).sum(0))
            if v != 20:
                omega[:, :-1, v] = tau * (theta[1:] - theta[:-1]) * unit(axis[:, :-1, v], 0)
        for name, value in zip(MODALITIES, (x, mo, bone, acc, axis, omega)):
            out[name][n] = value
    return out


def random_joint(rng, n, t, m=2):
    joint = rng.normal(scale=0.3, size=(n, 3, t, 25, m)).astype(np.float32)
    joint[:, :, :, 20] = 0  # preprocessed sequences are centred on joint 21
    return joint


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4), t=st.integers(3, 12),
       m=st.integers(1, 2), pairs=st.sampled_from(["ikem", "crossclr"]), true_timeline=st.booleans())
def test_random_inputs_match_the_slow_reference(seed, n, t, m, pairs, true_timeline):
    rng = np.random.default_rng(seed)
    joint = random_joint(rng, n, t, m)
    frames = rng.integers(30, 300, size=n)
    got = compute_modalities(joint, frames, bone_pairs=pairs, true_timeline=true_timeline)
    assert list(got) == list(MODALITIES)
    assert all(v.dtype == np.float32 and v.shape == joint.shape for v in got.values())
    # angular velocity divides small angle differences by tau: compare on its own scale
    expected = slow_modalities(joint, frames, pairs, true_timeline)
    for name in MODALITIES:
        atol = 1e-6 if name != "angular_velocity" else 2e-5
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=atol, err_msg=name)


def test_real_ntu_files_match_the_slow_reference(ntu_dir):
    xyz, frames, names = read_batch(ntu_dir)
    joint, _ = preprocess(xyz)
    got = compute_modalities(joint, frames)
    expected = slow_modalities(joint, frames)
    for name in MODALITIES:
        atol = 1e-6 if name != "angular_velocity" else 2e-5
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=atol, err_msg=name)
    one_body = [i for i, name in enumerate(names) if not name.endswith(("A050", "A054", "A055"))]
    for name in MODALITIES:
        assert not got[name][one_body, ..., 1].any(), name   # absent second body stays zero
    # The root bone is a unit normal wherever body 0 is present.
    np.testing.assert_allclose(np.linalg.norm(got["bone"][:, :, :, 20, 0], axis=1), 1, atol=1e-6)


def test_bone_of_a_translated_skeleton_is_unchanged():
    rng = np.random.default_rng(0)
    joint = random_joint(rng, 3, 6)
    moved = joint + rng.normal(size=(3, 3, 6, 1, 2)).astype(np.float32)
    a = compute_modalities(joint, [40, 50, 60], "bone,rotation_axis,omega")
    b = compute_modalities(moved, [40, 50, 60], "bone,rotation_axis,omega")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=2e-5, err_msg=name)


def test_static_sequence_has_zero_motion_acceleration_and_angular_velocity():
    rng = np.random.default_rng(1)
    joint = np.repeat(random_joint(rng, 2, 1), 8, axis=2)
    got = compute_modalities(joint, [20, 300], "motion,acceleration,omega,rotation_axis")
    assert not got["motion"].any() and not got["acceleration"].any()
    assert not got["angular_velocity"].any()       # rigid static pose: no angle change
    assert got["rotation_axis"].any()


def test_rotation_axis_is_orthogonal_to_both_bones():
    rng = np.random.default_rng(2)
    got = compute_modalities(random_joint(rng, 2, 5), [50, 50], "bone,rotation_axis")
    bone, axis = got["bone"].astype(np.float64), got["rotation_axis"].astype(np.float64)
    for v, u in ROTATION_AXIS_PAIRS:
        for b in (bone[:, :, :, v], bone[:, :, :, u]):
            dot = (axis[:, :, :, v] * b).sum(axis=1)
            scale = np.linalg.norm(axis[:, :, :, v], axis=1) * np.linalg.norm(b, axis=1)
            assert np.all(np.abs(dot) <= 1e-5 * scale + 1e-9)
    assert not got["rotation_axis"][:, :, :, 20].any()   # R_21 = b_21 x b_21 = 0


def test_hand_checked_values():
    # Joint 1 moves along x by 0.1 m per resized frame, the rest is still. With
    # 25 header frames tau = 2: motion 0.2 m/frame, zero at T-1; acceleration 0.
    joint = np.zeros((1, 3, 4, 25, 1), dtype=np.float32)
    joint[0, 0, :, 0, 0] = [0.0, 0.1, 0.2, 0.3]
    joint[0, 1, :, 1, 0] = 1.0          # spine mid straight up
    joint[0, 0, :, 4, 0] = -1.0         # L shoulder at -x, R shoulder at +x
    joint[0, 0, :, 8, 0] = 1.0
    got = compute_modalities(joint, [25])
    np.testing.assert_allclose(got["motion"][0, 0, :, 0, 0], [0.2, 0.2, 0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(got["acceleration"][0, 0, :, 0, 0], 0, atol=1e-6)
    # Torso normal: (X_2 - X_9) x (X_5 - X_9) = (-1, 1, 0) x (-2, 0, 0) = (0, 0, 2) -> +z.
    np.testing.assert_allclose(got["bone"][0, :, :, 20, 0], [[0] * 4, [0] * 4, [1] * 4], atol=1e-7)
    # IKEM: bone at joint 2 (spine mid) is X_2 - X_21 = +y; its axis with the normal:
    # y x z = +x. Hand tip from hand joint (ikem) vs from thumb (crossclr).
    np.testing.assert_allclose(got["rotation_axis"][0, :, 0, 1, 0], [1, 0, 0], atol=1e-7)
    cross = compute_modalities(joint, [25], "bone", bone_pairs="crossclr")["bone"]
    assert not cross[0, :, :, 20].any()
    joint[0, :, :, 21, 0] = 5.0
    ikem_b = compute_modalities(joint, [25], "bone")["bone"]
    cross_b = compute_modalities(joint, [25], "bone", bone_pairs="crossclr")["bone"]
    np.testing.assert_allclose(ikem_b[0, :, 0, 21, 0], [5, 5, 5])          # 22 - 8 (8 at 0)
    np.testing.assert_allclose(cross_b[0, :, 0, 21, 0], [5, 5, 5])         # 22 - 23 (23 at 0)
    joint[0, :, :, 22, 0] = 1.0
    cross_b = compute_modalities(joint, [25], "bone", bone_pairs="crossclr")["bone"]
    np.testing.assert_allclose(cross_b[0, :, 0, 21, 0], [4, 4, 4])


def test_angular_velocity_hand_checked():
    # Forearm (bone 7 = X_7 - X_6) turns about z by 0.1 rad per frame relative to the
    # upper arm (bone 6 = X_6 - X_5, along +x); tau = 50 / 100 = 0.5.
    t = 5
    joint = np.zeros((1, 3, t, 25, 1), dtype=np.float32)
    joint[0, 0, :, 4, 0] = 1.0
    joint[0, 0, :, 5, 0] = 2.0
    angles = 0.3 + 0.1 * np.arange(t)
    joint[0, 0, :, 6, 0] = 2.0 + np.cos(angles)
    joint[0, 1, :, 6, 0] = np.sin(angles)
    omega = compute_modalities(joint, [100], "omega")["angular_velocity"]
    # theta grows by 0.1 rad per frame; axis b_7 x b_6 = (cos, sin, 0) x (1, 0, 0) = -z
    # (un-normalised -sin), so omega = 0.5 * 0.1 * (0, 0, -1).
    np.testing.assert_allclose(omega[0, :, :-1, 6, 0], [[0] * 4, [0] * 4, [-0.05] * 4], atol=1e-6)
    assert not omega[0, :, -1].any() and not omega[0, :, :, 20].any()


def test_time_scale_and_bad_input():
    np.testing.assert_allclose(time_scale([25, 50, 100], 3), [2.0, 1.0, 0.5])
    np.testing.assert_array_equal(time_scale(None, 2, true_timeline=False), [1.0, 1.0])
    joint = random_joint(np.random.default_rng(3), 3, 5)
    with pytest.raises(ValueError, match="sample 1: frame count"):
        compute_modalities(joint, [10, 0, 10])
    joint[2, 0, 1, 3, 0] = np.inf
    with pytest.raises(ValueError, match="sample 2: NaN or inf"):
        compute_modalities(joint, [10, 10, 10])
    with pytest.raises(ValueError, match="bone_pairs"):
        compute_modalities(joint[:1], [10], bone_pairs="aimclr")
    with pytest.raises(ValueError, match="unknown modality"):
        compute_modalities(joint[:1], [10], "joint,speed")
    with pytest.raises(ValueError, match="at least 3 frames"):
        compute_modalities(joint[:1, :, :2], [10])


def test_three_samples_use_the_channel_axis():
    # N == 3 is where an implicit torch.cross axis would pick the batch (METHOD §11.4).
    rng = np.random.default_rng(4)
    joint = random_joint(rng, 3, 4)
    together = compute_modalities(joint, [30, 40, 50])
    for i in range(3):
        alone = compute_modalities(joint[i:i + 1], [[30, 40, 50][i]])
        for name in MODALITIES:
            np.testing.assert_array_equal(together[name][i:i + 1], alone[name], err_msg=name)


def test_atan2_matches_numpy_to_float32_rounding():
    # The float64 polynomial atan2 of the angular velocity (METHOD §3.6 uses atan2).
    from numba import njit

    from ikem_data.modalities.kernels import atan2_f64

    @njit
    def many(y, x, out):
        for i in range(y.shape[0]):
            out[i] = atan2_f64(y[i], x[i])

    rng = np.random.default_rng(0)
    y = np.abs(rng.normal(size=200_000)) * 10.0 ** rng.integers(-8, 3, 200_000)
    x = rng.normal(size=200_000) * 10.0 ** rng.integers(-8, 3, 200_000)
    special = [(0.0, 0.0), (0.0, -0.0), (0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (1.0, -0.0), (1.0, 1.0),
               (1.0, -1.0), (2.0, 1.0), (1.0, 2.0), (np.tan(np.pi / 8), 1.0), (1e-30, -1.0), (1.0, 1e-30)]
    y = np.concatenate([y, [s[0] for s in special]])
    x = np.concatenate([x, [s[1] for s in special]])
    got = np.empty_like(y)
    many(y, x, got)
    exact = np.arctan2(y, x)
    assert np.abs(got - exact).max() <= 2e-12 * np.abs(exact).max()
    # Signed zeros as IEEE atan2 (torch.atan2 too): atan2(0, -0.0) = pi.
    np.testing.assert_array_equal(got[-len(special):][:6], [0.0, np.pi, 0.0, np.pi, np.pi / 2, np.pi / 2])
    # Rounded to float32 it is the correctly rounded angle almost always, else 1 ulp away.
    f32, ref = got.astype(np.float32), exact.astype(np.float32)
    ulps = np.abs(f32.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1 and (ulps == 0).mean() > 0.999


def test_out_buffers_are_filled_and_joint_is_not_copied():
    rng = np.random.default_rng(5)
    joint = random_joint(rng, 4, 6)
    expected = compute_modalities(joint, [30, 40, 50, 60])
    out = {name: np.full(joint.shape, np.nan, dtype=np.float32) for name in MODALITIES}
    out["joint"] = joint
    got = compute_modalities(joint, [30, 40, 50, 60], out=out)
    for name in MODALITIES:
        assert got[name] is out[name]
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    with pytest.raises(ValueError, match="out\\['bone'\\]"):
        compute_modalities(joint, [30, 40, 50, 60], out={"bone": np.empty((4, 3, 6, 25, 1), np.float32)})
