"""IKEM preprocessing (METHOD.md §2) against a slow per-sample numpy + OpenCV reference."""

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ikem_data.modalities.preprocess import all_finite, preprocess, valid_length
from ntu_reader import read_batch

RTOL, ATOL = 2e-6, 2e-6  # a few float32 ulps of metre-scale coordinates


def linear_resize(image, t_out):
    """Half-pixel linear resize of (L, ...) rows to t_out rows (METHOD.md §2 step 4):
    s = (i + 0.5) L / t_out - 0.5, rows floor(s) and floor(s) + 1 clamped to [0, L-1],
    float32 weights and arithmetic as OpenCV's INTER_LINEAR."""
    length = image.shape[0]
    out = np.empty((t_out,) + image.shape[1:], dtype=np.float32)
    for i in range(t_out):
        s = (i + 0.5) * (1.0 / (t_out / length)) - 0.5
        lo = math.floor(s)
        w = s - lo
        a = image[min(max(lo, 0), length - 1)]
        b = image[min(max(lo + 1, 0), length - 1)]
        out[i] = a * np.float32(1.0 - w) + b * np.float32(w)
    return out


def slow_reference(xyz, t_length=50, per_frame=False, resize=linear_resize):
    """METHOD.md §2 steps 2-6, one sample at a time, written from the text."""
    n_samples, _, _, v_count, m_count = xyz.shape
    out = np.zeros((n_samples, 3, t_length, v_count, m_count), dtype=np.float32)
    lengths = np.zeros(n_samples, dtype=np.int32)
    for n in range(n_samples):
        x = xyz[n].astype(np.float32)
        length = int((np.abs(x[:, :, 0, 0]).sum(axis=0) != 0).sum())
        lengths[n] = length
        x = x - x[:, :, 20:21, :]
        for m in range(m_count):
            image = np.ascontiguousarray(x[:, :length, :, m].transpose(1, 2, 0))
            resized = resize(image, t_length)
            body = resized.transpose(2, 0, 1).astype(np.float32)  # (3, t, 25)
            s = body[:, :, 8] - body[:, :, 4]
            s[1] = 0
            norm = np.sqrt(np.sum(np.square(s), axis=0))
            deg = np.arccos(s[0] / (norm + np.float32(1e-4))) * np.float32(180 / np.pi)
            if per_frame:
                deg = np.where(s[2] >= 0, -deg, deg)
            elif np.sum(s[2]) >= 0:
                deg = -deg
            rad = deg * np.float32(np.pi) / np.float32(180)
            for t in range(t_length):
                c, si = float(np.cos(rad[t])), float(np.sin(rad[t]))
                rot = np.array([[c, 0, -si], [0, 1, 0], [si, 0, c]])
                out[n, :, t, :, m] = (rot @ body[:, t, :].astype(np.float64)).astype(np.float32)
    return out, lengths


def random_skeletons(rng, n, t, lengths, two_bodies=True):
    xyz = rng.normal(scale=0.5, size=(n, 3, t, 25, 2)).astype(np.float32)
    xyz[:, 2] += 3.0
    if not two_bodies:
        xyz[..., 1] = 0
    for i, length in enumerate(lengths):
        xyz[i, :, length:] = 0
    return xyz


@pytest.mark.parametrize("length", [1, 2, 7, 49, 50, 51, 99, 100, 137])
def test_resize_matches_opencv_inter_linear(length):
    # Centring is the identity on a body whose joint 21 is the origin; no alignment.
    rng = np.random.default_rng(length)
    xyz = rng.normal(scale=0.5, size=(1, 3, 140, 25, 1)).astype(np.float32)
    xyz[0, :, :, 20] = 0
    xyz[0, :, length:] = 0
    xyz[0, 0, :length, 0] = np.where(xyz[0, 0, :length, 0] == 0, 1, xyz[0, 0, :length, 0])
    joint, lengths = preprocess(xyz, t_length=50, align=False)
    assert lengths[0] == length
    image = np.ascontiguousarray(xyz[0, :, :length, :, 0].transpose(1, 2, 0))
    expected = cv2.resize(image, (25, 50), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    # OpenCV's SIMD arithmetic may round differently by an ulp or two (|x| < 3 here).
    np.testing.assert_allclose(joint[0, :, :, :, 0], expected, rtol=0, atol=6e-7)


def test_resize_hand_computed():
    # L = 2 frames with joint 1 at (0, 1, 0) and (4, 1, 0), all else 0, no alignment:
    # output frame i samples s = (i + 0.5) * 2 / 4 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1] -> x = 0, 1, 3, 4.
    xyz = np.zeros((1, 3, 5, 25, 1), dtype=np.float32)
    xyz[0, 0, 0, 0], xyz[0, 1, 0, 0] = 0.0, 1.0
    xyz[0, 0, 1, 0], xyz[0, 1, 1, 0] = 4.0, 1.0
    joint, lengths = preprocess(xyz, t_length=4, align=False)
    assert lengths[0] == 2
    np.testing.assert_allclose(joint[0, 0, :, 0, 0], [0.0, 1.0, 3.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(joint[0, 1, :, 0, 0], [1.0, 1.0, 1.0, 1.0], atol=1e-6)


def test_valid_length_is_a_count_of_nonzero_root_frames():
    xyz = np.zeros((3, 3, 10, 25, 2), dtype=np.float32)
    xyz[0, :, :7, 0, 0] = 1.0
    xyz[1, 0, [0, 2, 5, 9], 0, 0] = -0.5        # gaps: a count, not the last index + 1
    xyz[2, :, :, 3, 0] = 1.0                    # joint 1 zero everywhere
    xyz[2, :, :, 0, 1] = 1.0                    # body 1 does not count
    np.testing.assert_array_equal(valid_length(xyz), [7, 4, 0])
    assert valid_length(xyz).dtype == np.int32


def test_real_ntu_files_match_the_slow_reference(ntu_dir):
    xyz, _, names = read_batch(ntu_dir)
    for sign in ("sequence", "per_frame"):
        joint, lengths = preprocess(xyz, rotation_sign=sign)
        expected, expected_lengths = slow_reference(xyz, per_frame=sign == "per_frame")
        np.testing.assert_array_equal(lengths, expected_lengths)
        np.testing.assert_allclose(joint, expected, rtol=RTOL, atol=ATOL)
    two_body = [i for i, name in enumerate(names) if name.endswith(("A050", "A054", "A055"))]
    one_body = [i for i in range(len(names)) if i not in two_body]
    assert np.abs(joint[two_body, ..., 1]).sum(axis=(1, 2, 3)).min() > 0
    assert not joint[one_body, ..., 1].any()          # absent second body stays zero
    assert np.all(joint[:, :, :, 20] == 0)             # centred on joint 21


def opencv_resize(image, t_out):
    return cv2.resize(image, (image.shape[1], t_out), interpolation=cv2.INTER_LINEAR)


def test_real_ntu_files_match_an_opencv_pipeline(ntu_dir):
    # End to end with cv2.resize itself: its SIMD rounding differs by an ulp, which the
    # ill-conditioned arccos of the alignment turns into ~1e-6 m; far below Kinect noise.
    xyz, _, _ = read_batch(ntu_dir)
    joint, _ = preprocess(xyz)
    expected, _ = slow_reference(xyz, resize=opencv_resize)
    np.testing.assert_allclose(joint, expected, rtol=0, atol=2e-5)


def test_sign_sum_follows_numpy_float32_order():
    from ikem_data.modalities.preprocess import _numpy_sum_f32

    rng = np.random.default_rng(3)
    for n in [1, 5, 8, 9, 49, 50, 129, 200, 300, 700, 1024]:
        a = (rng.normal(size=n) * 10.0 ** rng.integers(-3, 3, size=n)).astype(np.float32)
        assert _numpy_sum_f32(a) == np.sum(a), n


def test_per_frame_sign_aligns_every_shoulder_vector(ntu_dir):
    xyz, _, _ = read_batch(ntu_dir)
    joint, _ = preprocess(xyz, rotation_sign="per_frame")
    s = joint[:, :, :, 8, 0] - joint[:, :, :, 4, 0]      # (N, 3, T)
    # Not exactly 0: the reference's angle uses c = s.x / (|s| + 1e-4), which leaves a
    # few per cent of |s| on z for short shoulder vectors (3 mm of 10 cm here).
    assert np.all(np.abs(s[:, 2]) < 0.05 * np.linalg.norm(s, axis=1))
    assert np.median(np.abs(s[:, 2])) < 1e-3
    assert np.all(s[:, 0] > 0)


def test_sequence_sign_misrotates_frames_of_the_opposite_sign():
    # Shoulder z alternates in sign; the sequence sum is positive, so frames with
    # s.z < 0 keep a z' = 2 x z / |s| residue (METHOD.md §2 step 5).
    t = 6
    xyz = np.zeros((1, 3, t, 25, 1), dtype=np.float32)
    xyz[0, :, :, 0] = 1.0
    xyz[0, 0, :, 8] = 0.3
    xyz[0, 2, :, 8, 0] = [0.4, -0.1, 0.4, -0.1, 0.4, -0.1]
    joint, _ = preprocess(xyz, t_length=t)
    sz_after = joint[0, 2, :, 8, 0] - joint[0, 2, :, 4, 0]
    np.testing.assert_allclose(sz_after[0::2], 0, atol=5e-4)
    expected = 2 * 0.3 * -0.1 / math.hypot(0.3, 0.1)
    np.testing.assert_allclose(sz_after[1::2], expected, rtol=3e-3)  # eps 1e-4 in |s|
    fixed, _ = preprocess(xyz, t_length=t, rotation_sign="per_frame")
    np.testing.assert_allclose(fixed[0, 2, :, 8, 0] - fixed[0, 2, :, 4, 0], 0, atol=5e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(1, 70), t_length=st.integers(3, 60),
       n=st.integers(1, 4), two_bodies=st.booleans(), per_frame=st.booleans())
def test_random_inputs_match_the_slow_reference(seed, t, t_length, n, two_bodies, per_frame):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=n)
    xyz = random_skeletons(rng, n, t, lengths, two_bodies)
    sign = "per_frame" if per_frame else "sequence"
    joint, got_lengths = preprocess(xyz, t_length=t_length, rotation_sign=sign)
    expected, expected_lengths = slow_reference(xyz, t_length, per_frame)
    np.testing.assert_array_equal(got_lengths, lengths)
    np.testing.assert_array_equal(got_lengths, expected_lengths)
    np.testing.assert_allclose(joint, expected, rtol=RTOL, atol=ATOL)
    if not two_bodies:
        assert not joint[..., 1].any()


def test_length_one_and_upsampling():
    rng = np.random.default_rng(0)
    xyz = random_skeletons(rng, 2, 30, [1, 20])
    joint, lengths = preprocess(xyz)
    assert list(lengths) == [1, 20]
    # L = 1: every output frame is the single (centred, aligned) input frame.
    np.testing.assert_allclose(joint[0], np.repeat(joint[0, :, :1], 50, axis=1), atol=1e-6)
    assert np.isfinite(joint).all()


def test_bad_input_is_refused_with_the_sample_index():
    xyz = random_skeletons(np.random.default_rng(1), 3, 10, [10, 10, 10])
    xyz[2, :, :, 0, 0] = 0
    with pytest.raises(ValueError, match="sample 2: no valid frame"):
        preprocess(xyz)
    joint, lengths = preprocess(xyz, on_empty="skip")
    assert lengths[2] == 0 and not joint[2].any() and joint[0].any()
    xyz[1, 1, 4, 7, 1] = np.nan
    with pytest.raises(ValueError, match="sample 1: NaN or inf"):
        preprocess(xyz, on_empty="skip")
    with pytest.raises(ValueError, match="t_length"):
        preprocess(xyz[:1], t_length=2)
    with pytest.raises(ValueError, match="rotation_sign"):
        preprocess(xyz[:1], rotation_sign="frame")
    with pytest.raises(ValueError, match=r"\(N, 3, T, 25, M\)"):
        preprocess(xyz[:, :, :, :24])


def test_reused_out_buffer_is_fully_rewritten():
    # A reused buffer holds the previous step's values: every element must be written,
    # also the zeros of an empty sample and of an absent second body.
    xyz = random_skeletons(np.random.default_rng(2), 3, 12, [12, 7, 9])
    xyz[1, :, :, 0, 0] = 0                                   # empty sample
    xyz[2, :, :, :, 1] = 0                                   # one body only
    expected, lengths = preprocess(xyz, on_empty="skip")
    out = np.full(expected.shape, np.nan, dtype=np.float32)
    joint, got = preprocess(xyz, on_empty="skip", out=out)
    assert joint is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(got, lengths)
    assert not out[1].any() and not out[2, :, :, :, 1].any()
    with pytest.raises(ValueError, match="out must be"):
        preprocess(xyz, on_empty="skip", out=out[:2])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_all_finite_sees_every_non_finite_value(value):
    a = np.random.default_rng(0).normal(size=1001).astype(np.float32)
    a[[0, 500]] = [np.float32(3e38), -np.float32(1e-45)]      # large and subnormal are finite
    assert all_finite(a)
    for index in (0, 517, 1000):
        b = a.copy()
        b[index] = value
        assert not all_finite(b)
